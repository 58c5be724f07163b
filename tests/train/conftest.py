"""A small GAP export and tiny random models of three families, built offline once per session."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from trainhelpers import loss_settings, make_records

from gap.data import export_records

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sharegpt export of the six records, all in the train split."""
    root = tmp_path_factory.mktemp("train-export")
    records = make_records(root / "source")
    export_records(records, root / "export", fmt="sharegpt")
    return root / "export"


@pytest.fixture(scope="session")
def family_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``family_dir("qwen2_vl")``: the tiny model folder of that family, built on first use.

    Tests that need one skip where the ``train`` extra (torch, transformers, peft) is not installed.
    """
    for module in ("torch", "transformers", "peft"):
        pytest.importorskip(module)
    from gap.train._tiny import make_tiny_family

    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = make_tiny_family(family, tmp_path_factory.mktemp(f"tiny-{family}"))  # type: ignore[arg-type]
        return built[family]

    return get


@pytest.fixture(scope="session")
def trained(
    family_dir: Callable[[str], Path], export_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Path]:
    """``trained("llava")``: the OUT folder of a 40-step LoRA run on that family, run on first use."""
    from gap.train import resolve, train

    runs: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in runs:
            out = tmp_path_factory.mktemp(f"trained-{family}")
            config = resolve(overrides=loss_settings(family_dir(family), export_dir, out))
            train(config, show_progress=False)
            runs[family] = out
        return runs[family]

    return get
