"""Round pictures, each under its own per-round URL: no pool, file name, order or image id in it.

Nothing in the response identifies the image across rounds either: no ETag, no Last-Modified, and
the browser's cache is private and keyed by the round's URL. The dashboard's thumbnails come from an
admin-only route in :mod:`gap.web.routes.admin`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from gap.db.engine import reading
from gap.services.game import load_image
from gap.services.round_images import round_image_id
from gap.web.deps import Context
from gap.web.errors import error_responses

router = APIRouter(prefix="/api", tags=["game"])

CACHE_SECONDS = 3600


@router.get(
    "/rounds/{round_id}/image",
    response_class=Response,
    responses={
        200: {"content": {"image/*": {}}, "description": "The picture."},
        **error_responses({404: "No such round, or not this key."}),
    },
)
def round_image(
    round_id: str,
    key: Annotated[str, Query(max_length=64, description="From the round's `image_url`.")],
    ctx: Context,
) -> Response:
    """The round's picture, for its player: fetch the `image_url` of the round as given."""
    with reading(ctx.factory) as db:
        image_id = round_image_id(db, round_id, key)
    data, mime = load_image(ctx, image_id)
    return Response(
        content=data,
        media_type=mime,
        headers={"Cache-Control": f"private, max-age={CACHE_SECONDS}", "X-Content-Type-Options": "nosniff"},
    )
