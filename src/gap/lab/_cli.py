"""The lab drives GAP through its own command line, in this process: the real code paths, one import."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from gap.errors import GapError


def run_gap(args: Sequence[str]) -> None:
    """Run ``gap ARGS`` here (torch loads once for every command); a failing command raises."""
    from gap.cli import app

    code = app(list(args), standalone_mode=False, prog_name="gap")
    if code not in (None, 0):
        raise GapError(f"`gap {shlex.join(args)}` failed (exit {code}); its error is printed above")
