"""FastAPI dependencies: the app's context and the authenticated player."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gap.config import Settings
from gap.db.engine import reading
from gap.errors import AuthError
from gap.services.game import GameContext
from gap.services.players import player_for_token

_bearer = HTTPBearer(auto_error=False, description="The token from POST /api/auth/guest.")


# Async though they do not await: FastAPI runs a plain ``def`` dependency in the thread pool, one
# thread hop per request for reading an attribute.
async def get_context(request: Request) -> GameContext:
    return request.app.state.context  # type: ignore[no-any-return]


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


Context = Annotated[GameContext, Depends(get_context)]
AppSettings = Annotated[Settings, Depends(get_app_settings)]


async def bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The request's bearer token, unchecked: the game's hot routes check it in their own query."""
    if credentials is None or not credentials.credentials:
        raise AuthError("missing bearer token")
    return credentials.credentials


Token = Annotated[str, Depends(bearer_token)]


def current_player_id(ctx: Context, token: Token) -> str:
    with reading(ctx.factory) as db:
        return player_for_token(db, token).id


PlayerId = Annotated[str, Depends(current_player_id)]
