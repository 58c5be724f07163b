"""`gap db`: schema migrations."""

from __future__ import annotations

import typer

from gap.cli._common import console, handle_errors, settings
from gap.db.migrate import upgrade as run_upgrade

app = typer.Typer(help="Database schema.", no_args_is_help=True)


@app.command()
@handle_errors
def upgrade() -> None:
    """Create or migrate the database named by GAP_DATABASE_URL to the newest schema."""
    current = settings()
    run_upgrade(current.resolved_database_url)
    console.print(f"database is up to date: {current.resolved_database_url}")
