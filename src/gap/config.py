"""One settings object for the whole platform.

Values come, highest priority first, from keyword arguments, `GAP_*` environment variables, a TOML
file (`GAP_CONFIG`, else `gap.toml` in the working directory when present), and the defaults below.
Reach the settings through :func:`get_settings`, never a module-level instance, so tests can build
their own.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_MODEL = "transformers:HuggingFaceTB/SmolVLM-256M-Instruct"


def _toml_path() -> Path | None:
    explicit = os.environ.get("GAP_CONFIG")
    if explicit:
        return Path(explicit)
    local = Path("gap.toml")
    return local if local.is_file() else None


class Settings(BaseSettings):
    """Every setting of GAP; each field is also the environment variable `GAP_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="GAP_", extra="ignore")

    data_dir: Path = Field(
        default=Path("gap-data"),
        description="Folder for the SQLite database, uploaded images and exports.",
    )
    storage_url: str | None = Field(
        default=None,
        description="Where images live, shared by every replica: `s3://bucket/prefix` (S3-compatible "
        "object storage, the `s3` extra; AWS credentials from the standard `AWS_*` variables) or a "
        "folder. Default: the data folder.",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="Endpoint of an S3-compatible server (MinIO, Ceph, R2), e.g. `http://minio:9000`; "
        "unset: AWS.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL. Default: SQLite file `gap.sqlite3` in the data folder. "
        "`postgresql://...` uses psycopg 3.",
    )
    model: str = Field(
        default=DEFAULT_MODEL,
        description="The game's VLM: `transformers:<folder or hub id>` or `openai:<model name>`.",
    )
    model_adapter: str | None = Field(
        default=None,
        description="A LoRA adapter folder (`gap train` output) served on top of a `transformers:` model; "
        "answers record its folder name and a short hash.",
    )
    openai_base_url: str = Field(
        default="http://127.0.0.1:8000/v1",
        description="Base URL of the OpenAI-compatible server for `openai:` models (vLLM, SGLang, Ollama).",
    )
    openai_api_key: str = Field(default="EMPTY", description="API key sent to the OpenAI-compatible server.")
    model_timeout: float = Field(
        default=60.0, gt=0, description="Seconds one model answer may take in all (a 504 after that)."
    )
    model_concurrency: int = Field(
        default=16, ge=1, description="Model answers one server process awaits at once; more queue."
    )
    model_breaker_failures: int = Field(
        default=5, ge=1, description="Model failures in a row that open the circuit (503 at once)."
    )
    model_breaker_reset: float = Field(
        default=30.0, gt=0, description="Seconds the circuit stays open before one probe question."
    )
    model_batch_window_ms: float = Field(
        default=5.0,
        ge=0,
        description="A `transformers:` model waits this long after a question for others to answer together.",
    )
    model_max_batch: int = Field(
        default=8, ge=1, description="Most questions a `transformers:` model answers in one `generate` call."
    )
    model_cache_size: int = Field(
        default=2,
        ge=1,
        description="Round models one server process keeps loaded (the current round's and the previous).",
    )
    model_warm_interval: float = Field(
        default=5.0,
        ge=0,
        description="Seconds between reads of the current round, whose model a server then loads in the "
        "background (0: never, the first question loads it).",
    )
    max_new_tokens: int = Field(
        default=128, gt=0, description="Longest answer the model may write, in tokens."
    )
    round_seconds: float = Field(default=120.0, gt=0, description="Time limit per image, in seconds.")
    session_images: int = Field(default=10, ge=1, description="Images per session (half tainted, half not).")
    image_max_side: int = Field(
        default=1536,
        ge=0,
        description="Images are downscaled at ingest to this long side, in pixels (0: stored as they are).",
    )
    image_policy: Literal["uniform", "coverage", "weakest"] = Field(
        default="uniform",
        description="Which untainted images a session gets: `uniform` (the paper), `coverage` (least played "
        "first) or `weakest` (Thompson sampling on each image's rate of exposing a real model error).",
    )
    image_exploration: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="`weakest`: chance that an untainted slot is drawn uniformly (the exploration floor).",
    )
    image_exposure_cap: int = Field(
        default=100,
        ge=0,
        description="`weakest`: rounds after which an image is left out while others remain (0: no cap).",
    )
    taint_rate: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="tau: chance that an answer on a tainted image is instructed wrong.",
    )
    seed: int | None = Field(
        default=None,
        description="Key the game's draws (each session's images, each answer's taint) on this seed, the "
        "player's name and the session, round and question, so an experiment replays alike whatever order "
        "concurrent requests arrive in (with the `uniform` image policy). Unset: unpredictable draws, as "
        "production needs; a known seed would let players predict the tainted images.",
    )
    theta: float = Field(
        default=0.8,
        gt=0.0,
        lt=1.0,
        description="Keep an untainted Wrong verdict when P(model wrong) >= theta.",
    )
    # The reliability estimator (gap.quality): one fit for `gap quality fit`, the dashboard,
    # settlement and `gap data export`, so their kept sets never differ.
    quality_epsilon: float = Field(
        default=0.05,
        gt=0.0,
        lt=0.5,
        description="epsilon: P(model wrong | tainted image, not instructed).",
    )
    quality_delta: float = Field(
        default=0.01,
        gt=0.0,
        lt=0.5,
        description="delta: P(model right | tainted image, instructed); must be below epsilon.",
    )
    quality_prior: Literal["grid", "beta"] = Field(
        default="grid",
        description="Population prior of player rates: `grid` (nonparametric) or `beta`.",
    )
    quality_pi_by: Literal["auto", "global", "image", "model"] = Field(
        default="auto",
        description="Prior of the model's error on untainted questions: `auto`, `model`, `image`, `global`.",
    )
    quality_group: Literal["exact", "embedding", "none"] = Field(
        default="exact",
        description="Combine verdicts on one question: `exact` text, `embedding` near-duplicates, or `none`.",
    )
    max_question_chars: int = Field(default=500, ge=1, description="Longest question a player may ask.")
    hints: bool = Field(
        default=False,
        description="Question hints: a stuck player may ask once per round for a question the reference "
        "model (else the game's model) suggests from the image; hinted questions are marked.",
    )
    max_body_bytes: int = Field(
        default=65536, ge=1024, description="Largest request body (JSON, forms); larger ones get 413."
    )
    rate_signups: str = Field(
        default="60/minute",
        description="Guest and Telegram sign-ups per client IP (429 above), e.g. `60/minute`.",
    )
    rate_questions: str = Field(default="60/minute", description="Questions per player (429 above).")
    rate_admin_login: str = Field(default="10/minute", description="Admin login attempts per client IP.")
    redis_url: str | None = Field(
        default=None, description="Redis shared by every replica for rate limits (`redis://host:6379/0`)."
    )
    max_upload_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        description="Largest multipart body (the dashboard's image upload); larger ones get 413.",
    )
    settle_min_sessions: int = Field(
        default=3,
        ge=1,
        description="Credit a player's points once this many finished sessions await settlement.",
    )
    settle_max_age: float = Field(
        default=86400.0,
        gt=0,
        description="...or once their oldest unsettled finished session is this many seconds old.",
    )
    worker: bool = Field(
        default=True,
        description="Run the background worker (close abandoned sessions, settle, refit) inside `gap serve`.",
    )
    worker_interval: float = Field(
        default=60.0, gt=0, description="Seconds between two passes of the background worker."
    )
    reference_model: str | None = Field(
        default=None,
        description="Model name on the reference endpoint that writes missing reference answers.",
    )
    reference_base_url: str | None = Field(
        default=None,
        description="Base URL of the OpenAI-compatible reference endpoint (separate from the game's).",
    )
    reference_api_key: str = Field(default="EMPTY", description="API key of the reference endpoint.")
    reference_timeout: float = Field(
        default=120.0, gt=0, description="Seconds one reference answer may take."
    )
    reference_max_new_tokens: int = Field(
        default=256, gt=0, description="Longest reference answer, in tokens."
    )
    judge_model: str | None = Field(
        default=None, description="Judge model of `gap eval score` (the GPT score), e.g. `gpt-4o-2024-08-06`."
    )
    judge_base_url: str = Field(
        default="https://api.openai.com/v1",
        description="Base URL of the judge's OpenAI-compatible endpoint (`gap eval score`).",
    )
    judge_api_key: str = Field(default="EMPTY", description="API key of the judge endpoint.")
    admin_token: str | None = Field(
        default=None, description="Bearer token for `/admin` (unset: admin disabled)."
    )
    ip_hash_key: str | None = Field(
        default=None,
        description="Key of the sign-up IP hash (unset: a random key kept in the data folder); "
        "replicas on several machines need the same one.",
    )
    telegram_bot_token: str | None = Field(default=None, description="Telegram bot token (Mini App and bot).")
    public_url: str | None = Field(
        default=None, description="Public URL of the game, used by the Telegram bot."
    )
    log_level: str = Field(default="INFO", description="Logging level: DEBUG, INFO, WARNING or ERROR.")
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`json`: one JSON object per log line (time, level, logger, message; method, path, "
        "status, duration_ms and request id for each request).",
    )
    telegram_auth_max_age: int = Field(
        default=86400,
        gt=0,
        description="Seconds a Telegram Mini App `initData` stays valid after its `auth_date`.",
    )
    telegram_webhook_secret: str | None = Field(
        default=None, description="Secret Telegram sends with each webhook update (`gap bot --webhook-url`)."
    )
    telegram_admin_ids: list[int] = Field(
        default_factory=list,
        description="Telegram user ids allowed into `/admin` (JSON list in the environment, e.g. `[123]`).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = _toml_path()
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)

    @field_validator("database_url")
    @classmethod
    def _normalise_driver(cls, value: str | None) -> str | None:
        """Plain `postgresql://` URLs get the psycopg 3 driver, which is the one GAP installs."""
        if value and value.startswith(("postgresql://", "postgres://")):
            return "postgresql+psycopg://" + value.split("://", 1)[1]
        return value

    @model_validator(mode="after")
    def _delta_below_epsilon(self) -> Settings:
        if not self.quality_delta < self.quality_epsilon:
            raise ValueError(
                f"quality_delta ({self.quality_delta}) must be smaller than quality_epsilon "
                f"({self.quality_epsilon}): METHOD.md section 2"
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'gap.sqlite3').resolve()}"

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once; tests and the CLI build `Settings(...)` themselves."""
    return Settings()
