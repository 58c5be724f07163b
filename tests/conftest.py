"""Shared test setup: offline Hugging Face, fixtures from tests/fixtures/."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest_plugins = [
    "fixtures.db",
    "fixtures.game",
    "fixtures.models",
    "fixtures.scale_backend",
    "fixtures.server",
    "fixtures.redis",  # after fixtures.server, which it imports
]
