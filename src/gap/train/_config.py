"""Training settings: one flat dataclass in the peft/TRL style, presets, TOML files and overrides.

Settings resolve in this order, later winning: the defaults below, the preset, the TOML file, then the
command line. Pure Python: nothing here imports torch, so ``gap train presets`` is instant.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gap.errors import ConfigError, InputError

Finetuning = Literal["lora", "full"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]

LM_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The language model's attention and MLP projections: LoRA's default targets."""


@dataclass
class TrainConfig:
    """Everything one ``gap train`` run needs; each field can come from a preset, TOML or the CLI."""

    model: str = field(default="", metadata={"help": "Base model: a local folder or a hub id."})
    data: str = field(default="", metadata={"help": "A `gap data export` or `gap data import` folder."})
    out: str = field(default="", metadata={"help": "Output folder (adapter, checkpoints, summary)."})
    preset: str | None = field(default=None, metadata={"help": "The preset these settings started from."})
    finetuning: Finetuning = field(default="lora", metadata={"help": "lora, or full fine-tuning."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_targets: list[str] = field(
        default_factory=lambda: list(LM_PROJECTIONS),
        metadata={"help": "Module names LoRA wraps, inside the language model only."},
    )
    lora_target_regex: str | None = field(
        default=None,
        metadata={"help": "A full-name regex instead of lora_targets (may reach the vision tower)."},
    )
    train_vision: bool = field(
        default=False, metadata={"help": "Also train the vision tower and projector (frozen otherwise)."}
    )
    adapter_init: str | None = field(default=None, metadata={"help": "Start from this LoRA adapter."})
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate."})
    lr_scheduler: str = field(default="cosine", metadata={"help": "transformers scheduler name."})
    warmup_ratio: float = field(default=0.03, metadata={"help": "Fraction of steps spent warming up."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2."})
    epochs: float = field(default=3.0, metadata={"help": "Passes over the training split."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (-1: use epochs)."})
    batch_size: int = field(default=4, metadata={"help": "Samples per device per step."})
    grad_accum: int = field(default=1, metadata={"help": "Gradient accumulation steps."})
    cutoff: int = field(
        default=2048, metadata={"help": "Longest sample in tokens; longer ones are dropped, never cut."}
    )
    max_pixels: int = field(
        default=512 * 28 * 28,
        metadata={"help": "Images are shrunk to at most this many pixels (a COCO photo fits)."},
    )
    val_fraction: float = field(
        default=0.0, metadata={"help": "Held-out share when the export has no val split."}
    )
    eval_steps: int = field(default=50, metadata={"help": "Evaluate every this many steps."})
    save_steps: int = field(default=100, metadata={"help": "Checkpoint every this many steps."})
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept."})
    seed: int = field(default=0, metadata={"help": "Seed for weights, dropout and data order."})
    precision: Precision = field(
        default="auto", metadata={"help": "auto (bf16 on a GPU that has it), fp32, bf16, fp16."}
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory."})
    merge: bool = field(default=False, metadata={"help": "Also write OUT/merged (base + adapter)."})
    workers: int = field(default=0, metadata={"help": "Data-loader worker processes."})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, dict[str, Any]] = {
    # The authors' Qwen2-VL run (LLaMA-Factory defaults + finetune_lora.sh): every LM linear layer.
    "qwen2-vl-paper": {
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "learning_rate": 4e-5,
        "epochs": 5.0,
        "lr_scheduler": "cosine",
        "warmup_ratio": 0.01,
        "weight_decay": 0.1,
        "cutoff": 2048,
        "batch_size": 8,
        "gradient_checkpointing": True,
    },
    # The authors' MiniCPM-Llama3-V-2.5 run (finetune_lora.sh): attention projections only.
    "minicpm-v-paper": {
        "lora_r": 64,
        "lora_alpha": 64,
        "lora_dropout": 0.05,
        "lora_targets": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "learning_rate": 2e-6,
        "max_steps": 5000,
        "lr_scheduler": "cosine",
        "warmup_ratio": 0.01,
        "weight_decay": 0.1,
        "adam_beta2": 0.95,
        "cutoff": 2048,
        "batch_size": 8,
        "gradient_checkpointing": True,
        "save_steps": 100,
        "eval_steps": 100,
    },
    # A laptop: a few steps in fp32 to see that everything runs.
    "cpu-smoke": {
        "max_steps": 10,
        "batch_size": 2,
        "learning_rate": 1e-3,
        "warmup_ratio": 0.0,
        "precision": "fp32",
        "cutoff": 1024,
        "save_steps": 5,
        "eval_steps": 5,
        "max_pixels": 224 * 224,
    },
}

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)


def preset_values(name: str) -> dict[str, Any]:
    try:
        return dict(PRESETS[name])
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}") from None


def _coerce(name: str, value: Any) -> Any:
    """``value`` (from TOML or a ``KEY=VALUE`` string) as the field's type; an error names the field."""
    if name not in _FIELDS:
        raise ConfigError(f"unknown training setting {name!r}; settings: {', '.join(_FIELDS)}")
    hint = _HINTS[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = type(None) in typing.get_args(hint)
    if optional and (value is None or (isinstance(value, str) and value.lower() in ("", "none"))):
        return None
    base = args[0] if optional and len(args) == 1 else hint
    try:
        if typing.get_origin(base) is Literal:
            choices = typing.get_args(base)
            if value not in choices:
                raise ValueError(f"expected one of {', '.join(map(str, choices))}")
            return value
        if typing.get_origin(base) is list:
            items = value.split(",") if isinstance(value, str) else list(value)
            return [str(item).strip() for item in items if str(item).strip()]
        if base is bool:
            if isinstance(value, bool):
                return value
            lowered = str(value).lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError("expected true or false")
            return lowered in ("true", "1", "yes")
        if base is int and isinstance(value, float) and not value.is_integer():
            raise ValueError("expected an integer")
        return base(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"training setting {name}={value!r}: {exc}") from None


def read_toml(path: Path) -> dict[str, Any]:
    """The settings in a TOML file (top-level keys, or a ``[train]`` table), or a saved JSON file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        document = json.loads(text) if Path(path).suffix == ".json" else tomllib.loads(text)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"{path} is not valid {Path(path).suffix.lstrip('.').upper() or 'TOML'}: {exc}"
        ) from None
    table = document.get("train", document)
    if not isinstance(table, dict):
        raise InputError(f"{path}: [train] must be a table")
    return dict(table)


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``["lora_r=16", ...]`` as a dict of raw strings; the names are checked when resolving."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set takes FIELD=VALUE, got {item!r}")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def resolve(
    *, preset: str | None = None, toml: Path | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """Defaults, then the preset, then the TOML file, then ``overrides`` (None values are skipped)."""
    layers: list[dict[str, Any]] = []
    from_file = read_toml(toml) if toml is not None else {}
    preset = (overrides or {}).get("preset") or from_file.get("preset") or preset
    if preset:
        layers.append({**preset_values(preset), "preset": preset})
    layers.append(from_file)
    layers.append({k: v for k, v in (overrides or {}).items() if v is not None})
    values: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            values[key] = _coerce(key, value)
    config = TrainConfig(**values)
    _check(config)
    return config


def _check(config: TrainConfig) -> None:
    positive = ("lora_r", "batch_size", "grad_accum", "cutoff", "max_pixels", "save_steps", "eval_steps")
    for name in positive:
        if getattr(config, name) <= 0:
            raise ConfigError(f"{name} must be positive, got {getattr(config, name)}")
    if not 0.0 <= config.val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {config.val_fraction}")
    if not 0.0 <= config.lora_dropout < 1.0:
        raise ConfigError(f"lora_dropout must be in [0, 1), got {config.lora_dropout}")
    if config.max_steps <= 0 and config.epochs <= 0:
        raise ConfigError("set max_steps or epochs to a positive number")
    if config.finetuning == "full" and (config.merge or config.adapter_init):
        raise ConfigError("--merge and --adapter-init apply to LoRA only (--finetuning full writes a model)")
