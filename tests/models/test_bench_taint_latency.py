"""The taint-latency benchmark runs on the tiny model, and its intervals are the textbook ones."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from scipy import stats

BENCH = Path(__file__).parents[2] / "benchmarks" / "bench_taint_latency.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_taint_latency", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_intervals_cover_the_mean_and_match_scipy(bench: ModuleType) -> None:
    diffs = np.random.default_rng(0).normal(0.010, 0.004, size=200)
    low, high = bench.t_ci(diffs)
    expected = stats.ttest_1samp(diffs, 0.0).confidence_interval(0.95)
    assert (low, high) == pytest.approx((expected.low, expected.high))
    boot_low, boot_high = bench.bootstrap_ci(diffs, seed=1)
    assert boot_low < diffs.mean() < boot_high
    assert boot_high - boot_low == pytest.approx(high - low, rel=0.15)


def test_measures_both_kinds_in_pairs_on_the_tiny_model(bench: ModuleType, tiny_vlm_dir: Path) -> None:
    from gap.models.transformers_backend import TransformersModel

    model = TransformersModel(str(tiny_vlm_dir), timeout=30, max_new_tokens=4)
    result = bench.measure(bench.ready(model), "tiny", pairs=3, warmup=1, seed=0)
    assert result.plain_s.shape == result.instructed_s.shape == (3,)
    assert (result.plain_s > 0).all() and (result.instructed_chars > 0).all()
