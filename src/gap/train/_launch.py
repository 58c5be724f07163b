"""Re-running a training under ``accelerate launch``, with the configs shipped in ``configs/``.

A shipped config is named (``cpu``, ``ddp``, ``zero2``, ``zero3``, ``fsdp``) or any accelerate YAML is
given by path. DeepSpeed YAMLs name their JSON relative to themselves; a copy with the absolute path
goes to ``OUT/accelerate_config.yaml``, so the launch works from any folder.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from gap.errors import ConfigError

CONFIGS_DIR = Path(__file__).parent / "configs"
SHIPPED = ("cpu", "ddp", "zero2", "zero3", "fsdp")
_DEEPSPEED_FILE = re.compile(r"^(\s*deepspeed_config_file:\s*)(\S+)\s*$", re.MULTILINE)


def accelerate_config(name_or_path: str, out: Path) -> Path:
    """The YAML to pass to ``accelerate launch --config_file`` for a shipped name or a path."""
    source = CONFIGS_DIR / f"{name_or_path}.yaml" if name_or_path in SHIPPED else Path(name_or_path)
    if not source.is_file():
        raise ConfigError(
            f"no accelerate config {name_or_path!r}: a YAML file, or one of {', '.join(SHIPPED)} "
            "(shipped in src/gap/train/configs/)"
        )
    text = source.read_text(encoding="utf-8")

    def absolute(match: re.Match[str]) -> str:
        path = Path(match.group(2))
        return match.group(1) + str(path if path.is_absolute() else (source.parent / path).resolve())

    out.mkdir(parents=True, exist_ok=True)
    target = out / "accelerate_config.yaml"
    target.write_text(_DEEPSPEED_FILE.sub(absolute, text), encoding="utf-8")
    return target


def launch_command(settings_file: Path, *, config_file: Path | None, resume: bool) -> list[str]:
    """``accelerate launch [--config_file F] -m gap.train --config SETTINGS [--resume]`` for this Python."""
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if config_file is not None:
        command += ["--config_file", str(config_file)]
    command += ["-m", "gap.train", "--config", str(settings_file)]
    return [*command, "--resume"] if resume else command
