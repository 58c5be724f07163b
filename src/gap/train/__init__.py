"""Fine-tuning VLMs on GAP exports: settings, data, the answer-only collator and the training run.

Importing this package is cheap: torch, transformers and peft load when :func:`train` runs.
"""

from __future__ import annotations

from gap.train._collate import IGNORE_INDEX, AssistantOnlyCollator, conversation, load_image
from gap.train._config import LM_PROJECTIONS, PRESETS, TrainConfig, parse_assignments, read_toml, resolve
from gap.train._data import Example, TrainingData, load_training_data
from gap.train._run import MERGED_DIR, SUMMARY_FILE, TrainResult, train

__all__ = [
    "IGNORE_INDEX",
    "LM_PROJECTIONS",
    "MERGED_DIR",
    "PRESETS",
    "SUMMARY_FILE",
    "AssistantOnlyCollator",
    "Example",
    "TrainConfig",
    "TrainResult",
    "TrainingData",
    "conversation",
    "load_image",
    "load_training_data",
    "parse_assignments",
    "read_toml",
    "resolve",
    "train",
]
