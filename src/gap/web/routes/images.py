"""Images by opaque id: no pool, file name or order in the URL or headers."""

from __future__ import annotations

from fastapi import APIRouter, Response

from gap.services.game import load_image
from gap.web.deps import Context

router = APIRouter(prefix="/api", tags=["game"])


@router.get("/images/{image_id}", response_class=Response, responses={200: {"content": {"image/*": {}}}})
def image(image_id: str, ctx: Context) -> Response:
    data, mime = load_image(ctx, image_id)
    return Response(content=data, media_type=mime, headers={"Cache-Control": "private, max-age=86400"})
