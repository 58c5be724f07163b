"""The operators' dashboard at ``/admin``: numbers, plots, image pools, exports, live turns.

Access: ``Authorization: Bearer <GAP_ADMIN_TOKEN>`` on any request (scripts), or a signed session
cookie set by ``POST /admin/login`` with that token or with Telegram ``initData`` of a user listed in
``GAP_TELEGRAM_ADMIN_IDS`` (browsers). Cookie-authenticated changes must carry the ``X-GAP-Admin``
header, which a cross-site form cannot send, so a cookie alone never changes anything. Everything
here is hidden from the public API schema (admins get its own at ``/admin/openapi.json``), and
nothing from it reaches the play page.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import shutil
import tempfile
import zipfile
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from gap.config import Settings
from gap.db.engine import reading, transaction
from gap.db.models import CollectionRound
from gap.errors import AuthError, GapError, InputError, NotFound
from gap.services import admin as dash
from gap.services.flags import suspicious_players
from gap.services.game import load_image
from gap.services.images import MAX_IMAGE_BYTES, add_image, parse_pool, update_image
from gap.services.rounds import round_stats, start_round
from gap.services.telegram import validate_init_data
from gap.storage import export_store
from gap.web.deps import AppSettings, Context
from gap.web.errors import complete_spec, error_responses

# Left out of the public spec where create_app includes it; admins read its own at /admin/openapi.json.
router = APIRouter(
    prefix="/admin",
    responses=error_responses(
        {
            401: "Not logged in as an admin, or a wrong admin token.",
            404: "The dashboard is disabled (no GAP_ADMIN_TOKEN or admin list), or no such thing.",
        }
    ),
)

COOKIE = "gap_admin"
COOKIE_SECONDS = 12 * 3600
CHANGE_HEADER = "X-GAP-Admin"
EXPORT_FORMATS = ("llava", "sharegpt", "swift", "hf")
_EXPORT_NAME = re.compile(r"^[a-z]+-\d{8}T\d{6}Z$")


# --- who is asking --------------------------------------------------------------------------


def admin_enabled(settings: Settings) -> bool:
    return bool(settings.admin_token) or bool(settings.telegram_admin_ids and settings.telegram_bot_token)


def _cookie_key(settings: Settings) -> bytes:
    # Derived from the secrets that grant access: changing the token or the admin list logs everyone out.
    material = "\0".join(
        [
            "gap-admin-session",
            settings.admin_token or "",
            settings.telegram_bot_token or "",
            ",".join(map(str, sorted(settings.telegram_admin_ids))),
        ]
    )
    return hashlib.sha256(material.encode()).digest()


def _sign(settings: Settings, payload: str) -> str:
    return hmac.new(_cookie_key(settings), payload.encode(), hashlib.sha256).hexdigest()


def session_cookie(settings: Settings, who: str, now: datetime) -> str:
    payload = f"{int(now.timestamp()) + COOKIE_SECONDS}.{who}"
    return f"{payload}.{_sign(settings, payload)}"


def _cookie_identity(settings: Settings, value: str, now: datetime) -> str | None:
    payload, _, signature = value.rpartition(".")
    expires, _, who = payload.partition(".")
    if not (payload and signature and expires.isdigit()):
        return None
    if not hmac.compare_digest(_sign(settings, payload).encode(), signature.encode()):
        return None
    if int(expires) < now.timestamp():
        return None
    if who.startswith("tg:") and int(who[3:]) not in settings.telegram_admin_ids:
        return None
    return who


def identify(request: Request, settings: Settings, now: datetime) -> str | None:
    """``"token"`` or ``"tg:<id>"`` for an admin, None for nobody; a wrong token is an error."""
    if not admin_enabled(settings):
        raise NotFound("the admin dashboard is disabled: set GAP_ADMIN_TOKEN or GAP_TELEGRAM_ADMIN_IDS")
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        token = header[7:].strip()
        if settings.admin_token and hmac.compare_digest(token.encode(), settings.admin_token.encode()):
            return "token"
        raise AuthError("wrong admin token")
    cookie = request.cookies.get(COOKIE)
    who = _cookie_identity(settings, cookie, now) if cookie else None
    if who and request.method not in ("GET", "HEAD") and request.headers.get(CHANGE_HEADER) != "1":
        raise AuthError(f"changes need the {CHANGE_HEADER} header")
    return who


def require_admin(request: Request, settings: AppSettings, ctx: Context) -> str:
    who = identify(request, settings, ctx.clock())
    if who is None:
        raise AuthError("admin login required")
    return who


Admin = Annotated[str, Depends(require_admin)]


class LoginIn(BaseModel):
    token: str | None = Field(default=None, max_length=512)
    init_data: str | None = Field(default=None, max_length=8192)


@router.post("/login", status_code=204)
def login(body: LoginIn, request: Request, settings: AppSettings, ctx: Context) -> Response:
    """Trade the admin token, or an admin's Telegram initData, for a session cookie."""
    if not admin_enabled(settings):
        raise NotFound("the admin dashboard is disabled")
    now = ctx.clock()
    if body.token is not None:
        if not (
            settings.admin_token and hmac.compare_digest(body.token.encode(), settings.admin_token.encode())
        ):
            raise AuthError("wrong admin token")
        who = "token"
    elif body.init_data is not None:
        user = validate_init_data(
            body.init_data,
            bot_token=settings.telegram_bot_token or "",
            max_age_s=settings.telegram_auth_max_age,
            now=now,
        )
        if user.id not in settings.telegram_admin_ids:
            raise AuthError("this Telegram account is not an admin")
        who = f"tg:{user.id}"
    else:
        raise InputError("send token or init_data")
    response = Response(status_code=204)
    response.set_cookie(
        COOKIE,
        session_cookie(settings, who, now),
        max_age=COOKIE_SECONDS,
        path="/admin",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout", status_code=204)
def logout() -> Response:
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path="/admin")
    return response


# --- the dashboard ----------------------------------------------------------------------------


RoundNumber = Annotated[
    int | None,
    Query(alias="round", ge=0, le=2**31 - 1, description="Only this round of collection; default: all."),
]
"""``?round=N``, bounded to the database's integer ids (a larger number is a 422, not a 500)."""


def round_filter(ctx: Context, number: RoundNumber = None) -> int | None:
    """``?round=N`` on the page and the JSON routes: figures of that round of collection only."""
    if number is not None:
        with reading(ctx.factory) as db:
            if db.get(CollectionRound, number) is None:
                raise NotFound(f"no round {number}: `gap rounds list` shows the rounds")
    return number


RoundFilter = Annotated[int | None, Depends(round_filter)]


def _quality(
    request: Request, ctx: Context, settings: Settings, number: int | None = None
) -> dash.QualityView:
    """The reliability model's view as the worker last stored it (a request never refits), of
    round ``number`` only when given."""
    with reading(ctx.factory) as db:
        return dash.quality_of_round(dash.stored_quality_view(db, theta=settings.theta), number)


def _reliability(ctx: Context, quality: dash.QualityView) -> tuple[list[float], bool]:
    if quality.available and quality.reliability:
        return quality.reliability, True
    with reading(ctx.factory) as db:
        rates = dash.player_rates(db)
    return [r.reliability for r in rates if r.reliability is not None], False


@router.get("", response_class=HTMLResponse, include_in_schema=False)
def dashboard(
    request: Request,
    settings: AppSettings,
    ctx: Context,
    number: RoundNumber = None,
) -> HTMLResponse:
    templates = request.app.state.templates
    if not admin_enabled(settings):  # a page saying how to turn it on, not bare JSON
        return templates.TemplateResponse(  # type: ignore[no-any-return]
            request, "admin_login.html", {"disabled": True, "telegram": False}, status_code=404
        )
    now = ctx.clock()
    who = identify(request, settings, now)
    if who is None:
        return templates.TemplateResponse(  # type: ignore[no-any-return]
            request,
            "admin_login.html",
            {"disabled": False, "telegram": bool(settings.telegram_admin_ids)},
            status_code=401,
        )
    number = round_filter(ctx, number)  # checked once signed in: nobody else learns which rounds exist
    quality = _quality(request, ctx, settings, number)
    with reading(ctx.factory) as db:
        summary = dash.overview(db, now=now, collection_round=number)
        images = dash.image_stats(db, collection_round=number)
        recent = dash.recent_turns(db, limit=20, collection_round=number)
        campaigns = round_stats(db)
        flagged = suspicious_players(db)
    reliability, model_based = _reliability(ctx, quality)
    return templates.TemplateResponse(  # type: ignore[no-any-return]
        request,
        "admin.html",
        {
            "who": who,
            "o": summary,
            "q": quality,
            "pct": dash.percent,
            "images": images,
            "top": dash.top_images(images, quality),
            "recent": recent,
            "campaigns": campaigns,
            "round_filter": number,
            "flagged": flagged,
            "round_query": "" if number is None else f"?round={number}",
            "hints": settings.hints,
            "reliability_n": len(reliability),
            "reliability_model": model_based,
            "formats": EXPORT_FORMATS,
            "theta": settings.theta,
            "max_upload_mb": MAX_IMAGE_BYTES // (1024 * 1024),
        },
    )


@router.get("/openapi.json")
def admin_openapi(request: Request, _who: Admin) -> dict[str, Any]:
    """The OpenAPI spec of the dashboard's API, for admins' scripts (the public spec leaves it out)."""
    app = request.app
    alone = FastAPI(title=f"{app.title} admin", version=app.version, openapi_url=None)
    alone.include_router(router)
    spec = alone.openapi()
    complete_spec(spec, app.state.rate_rules)
    return spec


def _content(mime: str, what: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {mime: {}}, "description": what}}


@router.get("/plots/{name}.png", response_class=Response, responses=_content("image/png", "The plot."))
def plot(
    name: str, request: Request, settings: AppSettings, ctx: Context, _who: Admin, number: RoundFilter
) -> Response:
    if name == "turns-per-day":
        with reading(ctx.factory) as db:
            png = dash.plot_turns_per_day(dash.turns_per_day(db, now=ctx.clock(), collection_round=number))
    elif name == "reliability":
        values, model_based = _reliability(ctx, _quality(request, ctx, settings))
        png = dash.plot_reliability(values, model_based=model_based)
    elif name == "kept":
        quality = _quality(request, ctx, settings, number)
        if not quality.available:
            raise NotFound(quality.note)
        png = dash.plot_kept(quality.candidate_posteriors, settings.theta)
    else:
        raise NotFound("no such plot")
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/api/overview")
def overview_json(
    request: Request, settings: AppSettings, ctx: Context, _who: Admin, number: RoundFilter
) -> dict[str, Any]:
    with reading(ctx.factory) as db:
        summary = dash.overview(db, now=ctx.clock(), collection_round=number)
    quality = _quality(request, ctx, settings, number)
    return {
        "round": number,
        **asdict(summary),
        "untainted_error_rate": summary.untainted_error_rate,
        "catch_rate": summary.catch_rate,
        "false_alarm_rate": summary.false_alarm_rate,
        "quality": {
            "available": quality.available,
            "note": quality.note,
            "theta": quality.theta,
            "pi": quality.pi,
            "candidates": quality.candidates,
            "kept": quality.kept,
            "fooled_by_round": quality.fooled_by_round,
        },
    }


@router.get("/api/turns")
def turns_json(ctx: Context, _who: Admin, number: RoundFilter, limit: int = 20) -> list[dict[str, Any]]:
    with reading(ctx.factory) as db:
        rows = dash.recent_turns(db, limit=max(1, min(limit, 200)), collection_round=number)
    return [{**asdict(r), "asked_at": r.asked_at.isoformat(timespec="seconds")} for r in rows]


@router.get("/api/flags")
def flags_json(ctx: Context, _who: Admin) -> list[dict[str, Any]]:
    """Players flagged for suspicious play (always Wrong, sub-second verdicts, many accounts from
    one IP), most flags first: reasons to look, not verdicts; see docs/rounds.md."""
    with reading(ctx.factory) as db:
        flagged = suspicious_players(db)
    return [
        {
            **asdict(f.stats),
            "wrong_share": f.stats.wrong_share,
            "flags": list(f.flags),
            "reasons": list(f.reasons),
        }
        for f in flagged
    ]


# --- image pools ------------------------------------------------------------------------------


@router.get("/api/images")
def images_json(ctx: Context, _who: Admin, number: RoundFilter) -> list[dict[str, Any]]:
    with reading(ctx.factory) as db:
        stats = dash.image_stats(db, collection_round=number)
    return [{**asdict(s), "wrong_rate": s.wrong_rate} for s in stats]


@router.post("/api/images")
def upload(
    ctx: Context,
    settings: AppSettings,
    _who: Admin,
    files: Annotated[list[UploadFile], File(description="One or more images.")],
    pool: Annotated[Literal["tainted", "untainted"], Form()],
) -> dict[str, list[dict[str, str]]]:
    """Validate and add each file; one bad file does not stop the others."""
    target = parse_pool(pool)
    results: list[dict[str, str]] = []
    for upload_file in files:
        name = upload_file.filename or "upload"
        data = upload_file.file.read(MAX_IMAGE_BYTES + 1)  # a plain def: decoding runs off the event loop
        try:
            with transaction(ctx.factory) as db:
                image = add_image(
                    db,
                    images=ctx.images,
                    data=data,
                    original_name=name,
                    pool=target,
                    now=ctx.clock(),
                    max_side=settings.image_max_side,
                )
                results.append({"file": name, "status": "added", "image_id": image.id})
        except GapError as exc:
            results.append({"file": name, "status": "refused", "reason": exc.message})
    return {"results": results}


@router.get("/images/{image_id}", response_class=Response, responses=_content("image/*", "The image."))
def thumbnail(image_id: str, ctx: Context, _who: Admin) -> Response:
    """An image by its id, for the dashboard only: players get per-round URLs (``routes/images.py``)."""
    data, mime = load_image(ctx, image_id)
    return Response(data, media_type=mime, headers={"Cache-Control": "private, max-age=600"})


class ImageChange(BaseModel):
    pool: Literal["tainted", "untainted"] | None = None
    enabled: bool | None = None


@router.patch("/api/images/{image_id}")
def change_image(image_id: str, body: ImageChange, ctx: Context, _who: Admin) -> dict[str, Any]:
    """Move an image to the other pool, or switch it off or on; rounds already played are unchanged."""
    with transaction(ctx.factory) as db:
        image = update_image(
            db, image_id, pool=parse_pool(body.pool) if body.pool else None, enabled=body.enabled
        )
        return {"image_id": image.id, "pool": image.pool, "enabled": image.enabled}


# --- exports ----------------------------------------------------------------------------------


class RoundIn(BaseModel):
    model: str
    adapter: str | None = None
    note: str | None = None


@router.get("/api/rounds")
def rounds_json(ctx: Context, _who: Admin) -> list[dict[str, Any]]:
    """Every round of collection with what was collected in it (as `gap rounds list --json`)."""
    with reading(ctx.factory) as db:
        return [{**asdict(r), "started_at": r.started_at.isoformat()} for r in round_stats(db)]


@router.post("/api/rounds", status_code=201)
def open_round(body: RoundIn, ctx: Context, _who: Admin) -> dict[str, Any]:
    """Open a new round (as `gap rounds start`): sessions started from now on play its model."""
    with transaction(ctx.factory) as db:
        row = start_round(db, model=body.model, adapter=body.adapter, note=body.note, now=ctx.clock())
        return {"number": row.id, "model": row.model, "adapter": row.adapter}


class ExportIn(BaseModel):
    format: Literal["llava", "sharegpt", "swift", "hf"]


@router.post("/api/export")
def export(body: ExportIn, settings: AppSettings, ctx: Context, _who: Admin) -> dict[str, Any]:
    """Write the kept turns as a fine-tuning set (in the data folder) and offer it as a zip."""
    summary = dash.export_dataset(
        ctx.factory,
        fmt=body.format,
        settings=settings,
        images=ctx.images,
        exports=export_store(settings),
        now=ctx.clock(),
    )
    return {
        "name": summary.name,
        "folder": summary.location,
        "records": summary.records,
        "kept": summary.kept,
        "missing_references": summary.missing_references,
        "download": f"/admin/exports/{summary.name}.zip",
    }


@router.get(
    "/exports/{name}.zip", response_class=FileResponse, responses=_content("application/zip", "The export.")
)
def download(name: str, settings: AppSettings, _who: Admin) -> FileResponse:
    """The export as a zip, built from wherever exports live (any replica can serve it)."""
    folder = export_store(settings).child(name) if _EXPORT_NAME.match(name) else None
    keys = folder.keys() if folder is not None else []
    if folder is None or not keys:
        raise NotFound("no such export")
    scratch = Path(tempfile.mkdtemp(prefix="gap-export-"))
    archive = scratch / f"{name}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        for key in keys:
            bundle.writestr(key, folder.get(key))
    return FileResponse(
        archive,
        media_type="application/zip",
        filename=f"gap-{name}.zip",
        background=BackgroundTask(shutil.rmtree, scratch, ignore_errors=True),
    )
