"""The tiny offline VLM: deterministic, small, quick, playable, and built by `gap models make-tiny`."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from gap.cli import models as models_cli
from gap.models.tiny import IMAGE_SEQ_LEN, MIN_NEW_TOKENS, make_tiny_vlm

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_folder_layout_and_size(tiny_vlm_dir: Path) -> None:
    names = {p.name for p in tiny_vlm_dir.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= names
    assert {"processor_config.json", "chat_template.jinja"} <= names
    assert sum(p.stat().st_size for p in tiny_vlm_dir.iterdir()) < 1_000_000
    config = json.loads((tiny_vlm_dir / "config.json").read_text())
    assert config["model_type"] == "idefics3"
    assert config["text_config"]["hidden_size"] == 32
    assert config["text_config"]["num_hidden_layers"] == 2
    processor = json.loads((tiny_vlm_dir / "processor_config.json").read_text())
    assert processor["image_seq_len"] == IMAGE_SEQ_LEN == 4
    generation = json.loads((tiny_vlm_dir / "generation_config.json").read_text())
    assert generation["min_new_tokens"] == MIN_NEW_TOKENS
    assert generation["eos_token_id"] not in generation["suppress_tokens"]


def test_build_is_deterministic_and_quick(tiny_vlm_dir: Path, tmp_path: Path) -> None:
    import torch

    before = torch.random.get_rng_state()
    started = time.perf_counter()
    again = make_tiny_vlm(tmp_path / "again")
    assert time.perf_counter() - started < 2.0
    assert digest(again) == digest(tiny_vlm_dir)
    assert torch.equal(torch.random.get_rng_state(), before), "building must not touch the global RNG"


def test_loads_back_through_the_auto_classes(tiny_vlm_dir: Path) -> None:
    processor = transformers.AutoProcessor.from_pretrained(tiny_vlm_dir)
    model = transformers.AutoModelForImageTextToText.from_pretrained(tiny_vlm_dir)
    assert type(processor).__name__ == "Idefics3Processor"
    assert type(model).__name__ == "Idefics3ForConditionalGeneration"


def test_cli_make_tiny(tmp_path: Path) -> None:
    root = typer.Typer()
    root.add_typer(models_cli.app, name="models")
    result = CliRunner().invoke(root, ["models", "make-tiny", str(tmp_path / "tiny")])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str((tmp_path / "tiny").resolve())
    assert (tmp_path / "tiny" / "model.safetensors").is_file()


def test_cli_make_tiny_bad_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    root = typer.Typer()
    root.add_typer(models_cli.app, name="models")
    result = CliRunner().invoke(root, ["models", "make-tiny", str(blocker / "tiny")])
    assert result.exit_code == 1
    assert "cannot create the model folder" in result.output
