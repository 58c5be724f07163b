"""`gap train` on tiny random models: losses fall, the adapter reloads and merges, resume is exact."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from trainhelpers import LOSS_STEPS, loss_settings

from gap.train import MERGED_DIR, SUMMARY_FILE, resolve, train
from gap.train._tiny import FAMILIES

# peft saves the whole head beside its LoRA when the head is a target (the tiny runs adapt it)
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Setting `save_embedding_layers`")]
SUMMARY_FIELDS = {
    "data",
    "settings",
    "versions",
    "losses",
    "eval_losses",
    "wall_time_s",
    "samples_per_s",
    "peak_memory",
    "steps",
    "vllm_servable",
}


@pytest.mark.parametrize("family", FAMILIES)
def test_forty_steps_halve_the_loss(family: str, trained: Callable[[str], Path]) -> None:
    summary = json.loads((trained(family) / SUMMARY_FILE).read_text())
    losses = summary["losses"]
    assert len(losses) == LOSS_STEPS == summary["steps"]
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first / 2, losses
    assert summary.keys() >= SUMMARY_FIELDS
    assert len(summary["data"]["hash"]) == 64 and summary["data"]["train"] == 6
    assert summary["settings"]["lora_r"] == 16 and summary["versions"]["peft"]
    assert summary["peak_memory"]["peak_bytes"] > 0 and summary["samples_per_s"] > 0
    # the head is adapted too, and vLLM would drop that: the run says so
    assert summary["vllm_servable"] is False and "lm_head" in summary["vllm_reason"]


_RELOAD = r"""
import json, sys, torch, transformers, peft
from gap.models.transformers_backend import load_processor
from gap.train import AssistantOnlyCollator, load_training_data
base_dir, out, merged_dir, data, plain = sys.argv[1:6]
processor = load_processor(transformers, base_dir)
batch = AssistantOnlyCollator(processor, max_pixels=401408)(load_training_data(data).train[:3])
def loss(model):
    with torch.no_grad():
        return float(model.eval()(**batch).loss)
base = transformers.AutoModelForImageTextToText.from_pretrained(base_dir)
result = {"base": loss(base)}
result["adapter"] = loss(peft.PeftModel.from_pretrained(base, out))
merged = transformers.AutoModelForImageTextToText.from_pretrained(merged_dir)
result["merged"] = loss(merged)
if plain == "1":
    processor = transformers.AutoProcessor.from_pretrained(merged_dir)
else:
    processor = load_processor(transformers, merged_dir)
inputs = processor(text=[processor.apply_chat_template([{"role": "user", "content": [{"type": "image"},
    {"type": "text", "text": "How many dogs are there?"}]}], add_generation_prompt=True)],
    images=[[__import__("PIL.Image", fromlist=["Image"]).new("RGB", (40, 30), (200, 30, 30))]],
    return_tensors="pt")
generated = merged.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
result["generated"] = int(generated.shape[-1] - inputs["input_ids"].shape[-1])
print("RESULT" + json.dumps(result))
"""


@pytest.mark.parametrize("family", ["idefics3", "qwen2_vl", "llava"])
def test_adapter_and_merge_reload_in_a_fresh_process(
    family: str, trained: Callable[[str], Path], family_dir: Callable[[str], Path], export_dir: Path
) -> None:
    out = trained(family)
    # Qwen2-VL's AutoProcessor needs torchvision here; the other families load with plain AutoProcessor
    plain = "0" if family == "qwen2_vl" else "1"
    command = [sys.executable, "-c", _RELOAD, str(family_dir(family)), str(out), str(out / MERGED_DIR)]
    command += [str(export_dir), plain]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT", 1)[1])
    assert result["adapter"] < result["base"] / 2  # the trained adapter is what loaded
    assert result["merged"] == pytest.approx(result["adapter"], abs=1e-4)
    assert result["generated"] == 4
    for name in ("chat_template.jinja", "tokenizer.json", "tokenizer_config.json", "config.json"):
        assert (out / MERGED_DIR / name).is_file()


def test_resume_from_a_mid_run_checkpoint_matches_the_uninterrupted_run(
    trained: Callable[[str], Path], family_dir: Callable[[str], Path], export_dir: Path, tmp_path: Path
) -> None:
    full = trained("qwen2_vl")
    uninterrupted = json.loads((full / SUMMARY_FILE).read_text())
    halfway = f"checkpoint-{LOSS_STEPS // 2}"
    shutil.copytree(full / halfway, tmp_path / halfway)
    config = resolve(overrides=loss_settings(family_dir("qwen2_vl"), export_dir, tmp_path, merge=True))
    resumed = train(config, resume=True, show_progress=False).summary
    assert resumed["resumed_from"].endswith(halfway)
    assert resumed["steps"] == LOSS_STEPS
    assert resumed["losses"][-1] == pytest.approx(uninterrupted["losses"][-1], abs=1e-4)
    assert resumed["losses"][LOSS_STEPS // 2 :] == pytest.approx(
        uninterrupted["losses"][LOSS_STEPS // 2 :], abs=1e-4
    )


def test_full_fine_tuning_keeps_the_vision_tower_frozen(
    family_dir: Callable[[str], Path], export_dir: Path, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoModelForImageTextToText

    base_dir = family_dir("llava")
    settings = loss_settings(base_dir, export_dir, tmp_path, finetuning="full", max_steps=3, merge=False)
    summary = train(resolve(overrides=settings), show_progress=False).summary
    assert summary["lora_targets"] is None and summary["vllm_servable"] is False
    base = dict(AutoModelForImageTextToText.from_pretrained(base_dir).named_parameters())
    tuned = dict(AutoModelForImageTextToText.from_pretrained(tmp_path).named_parameters())
    changed = {name for name, weight in tuned.items() if not torch.equal(weight, base[name])}
    assert any(name.startswith("model.language_model.") for name in changed)
    assert not any(
        name.startswith(("model.vision_tower.", "model.multi_modal_projector.")) for name in changed
    )


def test_adapter_init_continues_a_trained_adapter(
    trained: Callable[[str], Path], family_dir: Callable[[str], Path], export_dir: Path, tmp_path: Path
) -> None:
    first = json.loads((trained("idefics3") / SUMMARY_FILE).read_text())["losses"]
    settings = loss_settings(family_dir("idefics3"), export_dir, tmp_path, max_steps=2, merge=False)
    config = resolve(overrides={**settings, "adapter_init": str(trained("idefics3"))})
    again = train(config, show_progress=False).summary["losses"]
    assert again[0] < sum(first[:3]) / 3 / 2  # starts where the first run ended, not from the base
