"""`gap train` from the command line: presets, settings resolution, and each clear error."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from trainhelpers import make_records
from typer.testing import CliRunner

from gap.cli import app
from gap.data import export_records, save_records
from gap.errors import ConfigError, InputError
from gap.train import PRESETS, load_training_data, resolve, train

runner = CliRunner()


def _invoke(*args: str) -> Any:
    return runner.invoke(app, ["train", *args], env={"NO_COLOR": "1", "COLUMNS": "200"})


def test_presets_lists_every_preset_with_its_fields() -> None:
    result = _invoke("presets")
    assert result.exit_code == 0, result.output
    for name, fields in PRESETS.items():
        assert name in result.output
        assert all(key in result.output for key in fields)
    assert "qwen2-vl-paper" in PRESETS and PRESETS["qwen2-vl-paper"]["learning_rate"] == 4e-5
    assert PRESETS["minicpm-v-paper"]["lora_r"] == 64 and PRESETS["minicpm-v-paper"]["max_steps"] == 5000
    assert PRESETS["cpu-smoke"]["precision"] == "fp32"


def test_settings_resolve_preset_then_toml_then_options(tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text(
        '[train]\npreset = "cpu-smoke"\nlora_r = 4\nlearning_rate = 0.005\nlora_targets = ["q_proj"]\n'
    )
    config = resolve(toml=toml, overrides={"lora_r": 32, "epochs": None, "lora_dropout": "0.1"})
    assert config.preset == "cpu-smoke"
    assert config.max_steps == PRESETS["cpu-smoke"]["max_steps"]  # from the preset
    assert config.learning_rate == 0.005 and config.lora_targets == ["q_proj"]  # from the file
    assert config.lora_r == 32 and config.lora_dropout == 0.1  # from the options
    toml.write_text("lora_rank = 4\n")
    with pytest.raises(ConfigError, match="unknown training setting 'lora_rank'"):
        resolve(toml=toml)
    with pytest.raises(ConfigError, match="lora_r"):
        resolve(overrides={"lora_r": "many"})


def test_unknown_preset_names_the_presets() -> None:
    result = _invoke("--model", "m", "--data", "d", "--out", "o", "--preset", "qwen-paper")
    assert result.exit_code == 1
    assert "unknown preset 'qwen-paper'" in result.output and "cpu-smoke" in result.output


@pytest.mark.slow
def test_a_short_run_prints_and_saves_the_resolved_settings(
    family_dir: Callable[[str], Path], export_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["--model", str(family_dir("idefics3")), "--data", str(export_dir), "--out", str(out)]
    # the multi-turn record (r2, about 72 tokens with the image) is longer than the cutoff: dropped
    args += ["--cutoff", "60", "--val-fraction", "0.5", "--set", "eval_steps=1"]
    result = _invoke(*args, "--preset", "cpu-smoke", "--max-steps", "2", "--set", "save_steps=50")
    assert result.exit_code == 0, result.output
    assert "training settings" in result.output and "cpu-smoke" in result.output
    assert "2/2" in result.output and "samples/s" in result.output and " lr " in result.output  # the bar
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["max_steps"] == 2 and saved["save_steps"] == 50 and saved["preset"] == "cpu-smoke"
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["steps"] == 2 and len(summary["losses"]) == 2
    dropped = summary["data"]["dropped"]
    assert [d["id"] for d in dropped] == ["r2"] and dropped[0]["tokens"] > 60
    assert summary["data"]["val"] >= 1 and [e["step"] for e in summary["eval_losses"]] == [1, 2]
    assert summary["vllm_servable"] is True  # language-model targets only, by default
    assert "vLLM can serve this adapter" in result.output
    assert (out / "adapter_config.json").is_file() and (out / "tokenizer.json").is_file()


def test_a_failing_set_stops_before_any_weights_load(tmp_path: Path) -> None:
    export_records(make_records(tmp_path / "src"), tmp_path / "e", fmt="llava")
    rows = json.loads((tmp_path / "e" / "train.json").read_text())
    rows[3]["conversations"][1]["value"] = " "
    (tmp_path / "e" / "train.json").write_text(json.dumps(rows))
    # the model folder does not even exist: the data check must come first
    result = _invoke(
        "--model", str(tmp_path / "nowhere"), "--data", str(tmp_path / "e"), "--out", str(tmp_path / "o")
    )
    assert result.exit_code == 1
    assert "fails `gap data validate`" in result.output and "empty-answer" in result.output


def _config(model: Path, data: Path, out: Path, **extra: Any) -> Any:
    return resolve(
        overrides={"model": str(model), "data": str(data), "out": str(out), "max_steps": 2, **extra}
    )


def test_a_model_without_image_input(tmp_path: Path, export_dir: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "text-only")
    with pytest.raises(ConfigError, match="'llama' model without image input"):
        train(_config(tmp_path / "text-only", export_dir, tmp_path / "o"), show_progress=False)


def test_bf16_where_the_machine_has_none(
    family_dir: Callable[[str], Path], export_dir: Path, tmp_path: Path
) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        pytest.skip("this machine has bf16")
    config = _config(family_dir("idefics3"), export_dir, tmp_path / "o", precision="bf16")
    with pytest.raises(ConfigError, match=r"precision bf16 asked.*--precision fp32"):
        train(config, show_progress=False)


def test_resume_without_a_checkpoint(
    family_dir: Callable[[str], Path], export_dir: Path, tmp_path: Path
) -> None:
    config = _config(family_dir("idefics3"), export_dir, tmp_path / "o")
    with pytest.raises(ConfigError, match="holds no checkpoint"):
        train(config, resume=True, show_progress=False)


def test_cuda_out_of_memory_says_what_to_change(
    family_dir: Callable[[str], Path], export_dir: Path, tmp_path: Path
) -> None:
    torch = pytest.importorskip("torch")
    from transformers import TrainerCallback

    class RunOutOfMemory(TrainerCallback):
        """What torch raises when a CUDA allocation fails, raised at the first step on any machine."""

        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    config = _config(family_dir("idefics3"), export_dir, tmp_path / "o", batch_size=4)
    with pytest.raises(ConfigError) as caught:
        train(config, callbacks=[RunOutOfMemory()], show_progress=False)
    message = caught.value.message
    assert "ran out of memory" in message and "batch_size (now 4)" in message
    assert "--gradient-checkpointing" in message and "--max-pixels" in message


def test_an_export_with_remote_images_is_refused(tmp_path: Path) -> None:
    remote = [
        dataclasses.replace(r, image="https://example.org/a.png") for r in make_records(tmp_path / "src")
    ]
    save_records(remote, tmp_path / "remote", manifest={"source": "test"})
    with pytest.raises(InputError, match="not a local file"):
        load_training_data(tmp_path / "remote")


@pytest.mark.slow
def test_accelerate_launch_on_one_cpu_process_trains(
    family_dir: Callable[[str], Path], export_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["--model", str(family_dir("llava")), "--data", str(export_dir), "--out", str(out)]
    args += ["--preset", "cpu-smoke", "--max-steps", "3", "--launcher", "accelerate"]
    result = _invoke(*args, "--accelerate-config", "cpu")
    assert result.exit_code == 0, result.output
    assert "accelerate.commands.launch" in result.output and "-m gap.train" in result.output
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["steps"] == 3 and len(summary["losses"]) == 3
    assert summary["settings"]["preset"] == "cpu-smoke"
    assert (out / "accelerate_config.yaml").is_file()


def test_deepspeed_configs_point_at_their_json(tmp_path: Path) -> None:
    from gap.train._launch import SHIPPED, accelerate_config

    for name in SHIPPED:
        written = accelerate_config(name, tmp_path / name).read_text()
        if name.startswith("zero"):
            path = Path(written.split("deepspeed_config_file:")[1].split()[0])
            assert path.is_absolute() and json.loads(path.read_text())["zero_optimization"]["stage"] == int(
                name[-1]
            )
    with pytest.raises(ConfigError, match="no accelerate config 'zero4'"):
        accelerate_config("zero4", tmp_path)
