"""The HTML page that plays the game (server-rendered, one small JS module, no build step)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from gap.web.deps import AppSettings

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def play(request: Request, settings: AppSettings) -> HTMLResponse:
    templates = request.app.state.templates
    return templates.TemplateResponse(  # type: ignore[no-any-return]
        request, "play.html", {"round_seconds": settings.round_seconds}
    )
