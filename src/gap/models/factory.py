"""Build the configured VLM backend from a model spec such as ``transformers:<dir>`` or ``openai:<name>``.

Heavy libraries are imported only by the backend that needs them, when it is built or first used.
"""

from __future__ import annotations

from pathlib import Path

from gap.config import Settings
from gap.errors import ConfigError
from gap.models.base import VisionChatModel

ACCEPTED_FORMS = "'transformers:<folder or hub id>', 'openai:<model name>' or an existing model folder"


def load_model(spec: str, settings: Settings) -> VisionChatModel:
    """The backend named by ``spec``, configured from ``settings``; a bad spec raises :class:`ConfigError`."""
    kind, sep, target = spec.partition(":")
    target = target.strip()
    if sep and kind == "transformers" and target:
        from gap.models.transformers_backend import TransformersModel

        return TransformersModel(
            target,
            timeout=settings.model_timeout,
            max_new_tokens=settings.max_new_tokens,
            adapter=settings.model_adapter,
            batch_window=settings.model_batch_window_ms / 1000,
            max_batch=settings.model_max_batch,
        )
    if sep and kind == "openai" and target and settings.model_adapter:
        raise ConfigError(
            "GAP_MODEL_ADAPTER serves an adapter through the transformers backend; for vLLM serve it "
            "there (vllm serve BASE --enable-lora --lora-modules gap=ADAPTER) and set GAP_MODEL=openai:gap"
        )
    if sep and kind == "openai" and target:
        from gap.models.openai_backend import OpenAIModel

        return OpenAIModel(
            target,
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key,
            timeout=settings.model_timeout,
            max_new_tokens=settings.max_new_tokens,
        )
    if spec.strip() and Path(spec).is_dir():
        return load_model(f"transformers:{spec}", settings)
    raise ConfigError(f"unknown model spec {spec!r}: expected {ACCEPTED_FORMS}")


def load_ready_model(spec: str, settings: Settings) -> VisionChatModel:
    """The backend of :func:`load_model`, with its start-up work done now (local weights loaded, a
    server's system-role support probed), so no player's answer pays for it."""
    model = load_model(spec, settings)
    preload = getattr(model, "load", None)  # not every backend has start-up work
    if callable(preload):
        preload()
    return model
