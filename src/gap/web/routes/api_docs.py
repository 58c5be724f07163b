"""The API documentation pages (Swagger UI at ``/docs``, ReDoc at ``/redoc``), served offline.

FastAPI's own pages load their scripts from a CDN, so they are blank without network; these load the
copies vendored under ``/static/vendor/`` (see ``VENDORED.md`` there).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)

# Only this server: ReDoc's sidebar would otherwise fetch its maker's logo from cdn.redoc.ly (it hides
# the image when that fails), which pings a third party on every visit.
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:"
)


def _offline(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CSP
    return page


def _vendor(request: Request, name: str) -> str:
    return f"{request.scope.get('root_path', '')}/static/vendor/{name}"


def _openapi_url(request: Request) -> str:
    return f"{request.scope.get('root_path', '')}{request.app.openapi_url}"


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui(request: Request) -> HTMLResponse:
    return _offline(
        get_swagger_ui_html(
            openapi_url=_openapi_url(request),
            title=f"{request.app.title} API",
            swagger_js_url=_vendor(request, "swagger-ui-bundle.js"),
            swagger_css_url=_vendor(request, "swagger-ui.css"),
            swagger_favicon_url=_vendor(request, "swagger-ui-favicon.png"),
        )
    )


@router.get("/redoc", response_class=HTMLResponse)
def redoc(request: Request) -> HTMLResponse:
    return _offline(
        get_redoc_html(
            openapi_url=_openapi_url(request),
            title=f"{request.app.title} API",
            redoc_js_url=_vendor(request, "redoc.standalone.js"),
            redoc_favicon_url=_vendor(request, "swagger-ui-favicon.png"),
            with_google_fonts=False,
        )
    )
