"""Build the FastAPI application from settings. Nothing here runs at import time."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from gap import __version__
from gap.config import Settings
from gap.db.engine import make_engine, make_sessionmaker
from gap.db.migrate import is_current, upgrade
from gap.errors import ConfigError
from gap.game import GameRules
from gap.logs import setup_logging
from gap.models.base import VisionChatModel
from gap.models.gate import model_gate
from gap.services.game import Clock, GameContext, utcnow
from gap.services.hints import hints_for
from gap.services.image_policy import untainted_picker
from gap.services.rounds import RoundModels, models_in_use, round_model_loader, watch_rounds
from gap.storage import image_store
from gap.web.access import AccessLog
from gap.web.errors import document_errors, install_error_handlers
from gap.web.metrics import Metrics, RequestMetrics
from gap.web.middleware import EdgeGuard
from gap.web.ratelimit import RateLimits, make_limiter, rules_from
from gap.web.routes import (
    admin,
    api_docs,
    auth,
    health,
    hints,
    images,
    leaderboard,
    me,
    pages,
    ranks,
    rounds,
    sessions,
)

log = logging.getLogger(__name__)
HERE = Path(__file__).parent


def lazy_model(load: Callable[[], VisionChatModel]) -> Callable[[], VisionChatModel]:
    """Load the model on first use, once, even under concurrent first requests."""
    lock = threading.Lock()
    loaded: list[VisionChatModel] = []

    def get() -> VisionChatModel:
        if not loaded:
            with lock:
                if not loaded:
                    loaded.append(load())
        return loaded[0]

    return get


def create_app(
    settings: Settings,
    *,
    model: VisionChatModel | Callable[[], VisionChatModel] | None = None,
    clock: Clock = utcnow,
    rng: random.Random | None = None,
    upgrade_schema: bool | None = None,
) -> FastAPI:
    """The GAP web app. ``model`` defaults to the one named by ``settings.model``, loaded lazily.

    An old database schema is upgraded here only where one process owns the database: SQLite, unless
    ``upgrade_schema`` says otherwise. Replicas (PostgreSQL, ``gap serve --workers N``) refuse to
    start on it instead of racing each other to migrate: ``gap db upgrade`` is the release step.
    """
    engine = make_engine(settings.resolved_database_url)
    if upgrade_schema is None:
        upgrade_schema = engine.dialect.name == "sqlite"
    if not upgrade_schema:
        require_current_schema(settings.resolved_database_url)
    elif not is_current(engine):
        log.info("upgrading the database schema")
        upgrade(settings.resolved_database_url)
    if model is None:
        from gap.models.factory import load_ready_model

        get_model = lazy_model(lambda: load_ready_model(settings.model, settings))
    elif isinstance(model, VisionChatModel):
        fixed = model
        get_model = lambda: fixed  # noqa: E731
    else:
        get_model = lazy_model(model)

    metrics = Metrics()
    rules = rules_from(settings)
    factory = make_sessionmaker(engine)
    round_models = RoundModels(
        round_model_loader(settings, get_model),
        capacity=settings.model_cache_size,
        in_use=lambda: models_in_use(factory),
    )
    context = GameContext(
        factory=factory,
        rules=GameRules(
            round_seconds=settings.round_seconds,
            session_images=settings.session_images,
            taint_rate=settings.taint_rate,
        ),
        model=get_model,
        images=image_store(settings),
        max_question_chars=settings.max_question_chars,
        model_timeout=settings.model_timeout,
        clock=clock,
        rng=rng,
        seed=settings.seed,
        pick_untainted=untainted_picker(settings),
        round_models=round_models,
        gate=model_gate(get_model, settings, on_answer=metrics.model_answered),
        hints=settings.hints,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        if settings.model_warm_interval > 0:
            watch_rounds(factory, round_models, settings.model_warm_interval, stop)
        try:
            yield
        finally:
            stop.set()
            metrics.process_exited()
            engine.dispose()

    app = FastAPI(
        title="GAP",
        version=__version__,
        description="Gamified Adversarial Prompting: ask a VLM about an image, catch its mistakes.",
        lifespan=lifespan,
        docs_url=None,  # api_docs serves /docs and /redoc from vendored assets, not a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.context = context
    app.state.hints = hints_for(settings, context)
    app.state.metrics = metrics
    app.state.rate_rules = rules
    metrics.watch(context.gate)
    app.state.templates = Jinja2Templates(directory=HERE / "templates")
    install_error_handlers(app)
    app.add_middleware(
        EdgeGuard, max_body_bytes=settings.max_body_bytes, max_upload_bytes=settings.max_upload_bytes
    )
    app.add_middleware(RateLimits, rules=rules, limiter=make_limiter(settings.redis_url))
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.add_middleware(AccessLog)  # outermost: every response gets its X-Request-ID and a log line
    # The game's questions and verdicts first: a request tries the routers in order, and FastAPI
    # recounts an included router's routes at every try (py-spy, 200 clients: about a tenth of the
    # server's busy time went to matching routes).
    for module in (rounds, sessions, auth, me, ranks, hints, leaderboard, images, pages, api_docs, health):
        app.include_router(module.router)
    app.include_router(admin.router, include_in_schema=False)  # admins get theirs: /admin/openapi.json
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    document_errors(app, rules)
    return app


def require_current_schema(database_url: str) -> None:
    """Refuse (:class:`ConfigError`) a database whose schema this release would have to upgrade."""
    engine = make_engine(database_url)
    try:
        if not is_current(engine):
            raise ConfigError(
                "the database schema is older than this release: run `gap db upgrade` once (the release "
                "step), then start the servers"
            )
    finally:
        engine.dispose()


def replica_app() -> FastAPI:
    """The app of one ``gap serve --workers N`` worker process: settings from the environment, the
    model loaded and probed before serving, and never a schema upgrade (see :func:`create_app`)."""
    from gap.config import get_settings
    from gap.models.factory import load_ready_model

    settings = get_settings()
    setup_logging(settings.log_level, settings.log_format)  # a fresh process: nothing configured yet
    return create_app(settings, model=load_ready_model(settings.model, settings), upgrade_schema=False)
