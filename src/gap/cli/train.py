"""`gap train`: LoRA or full fine-tuning of a VLM on a GAP export; `gap train presets` lists presets.

torch, transformers and peft load inside the command (the ``train`` extra), never when the CLI starts.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from gap.cli._common import console, handle_errors
from gap.errors import ConfigError

app = typer.Typer(
    help="Fine-tune a VLM on a GAP export (LoRA by default); `gap train presets` lists the presets.",
    invoke_without_command=True,
)

Launcher = Annotated[
    str,
    typer.Option(
        help="none (this process), or accelerate: re-run under `accelerate launch -m gap.train` "
        "(DDP; pass --accelerate-config for DeepSpeed or FSDP, see src/gap/train/configs/)."
    ),
]


def _settings_table(values: dict[str, Any], title: str) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    for key, value in values.items():
        table.add_row(key, str(value))
    return table


@app.command("presets")
def presets() -> None:
    """List the presets with every field they set (other fields keep their defaults)."""
    from gap.train._config import PRESETS, TrainConfig

    defaults = TrainConfig().to_dict()
    for name, values in PRESETS.items():
        console.print(_settings_table(values, f"{name}"))
    console.print(
        _settings_table({k: v for k, v in defaults.items() if k not in ("model", "data", "out")}, "defaults")
    )


@app.callback()
@handle_errors
def train(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(help="Base model: a local folder or a hub id.")] = None,
    data: Annotated[
        Path | None, typer.Option(help="A `gap data export` or `gap data import` folder.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder: adapter, checkpoints, summary.")] = None,
    preset: Annotated[str | None, typer.Option(help="Start from a preset (`gap train presets`).")] = None,
    config: Annotated[Path | None, typer.Option(help="A TOML file of settings (or a saved JSON).")] = None,
    adapter_init: Annotated[str | None, typer.Option(help="Continue training this LoRA adapter.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps.")] = None,
    epochs: Annotated[float | None, typer.Option(help="Passes over the training split.")] = None,
    finetuning: Annotated[str | None, typer.Option(help="lora (default) or full.")] = None,
    lora_r: Annotated[int | None, typer.Option(help="LoRA rank.")] = None,
    lora_alpha: Annotated[int | None, typer.Option(help="LoRA alpha.")] = None,
    lora_dropout: Annotated[float | None, typer.Option(help="LoRA dropout.")] = None,
    lora_targets: Annotated[
        str | None, typer.Option(help="Comma-separated module names, inside the language model.")
    ] = None,
    lora_target_regex: Annotated[
        str | None, typer.Option(help="Full-name regex of LoRA targets (overrides --lora-targets).")
    ] = None,
    train_vision: Annotated[
        bool | None, typer.Option("--train-vision/--freeze-vision", help="Train the vision tower too.")
    ] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Samples per device per step.")] = None,
    grad_accum: Annotated[int | None, typer.Option(help="Gradient accumulation steps.")] = None,
    cutoff: Annotated[int | None, typer.Option(help="Longest sample in tokens; longer are dropped.")] = None,
    max_pixels: Annotated[int | None, typer.Option(help="Images shrink to at most this many pixels.")] = None,
    val_fraction: Annotated[float | None, typer.Option(help="Val share when the export has none.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for weights, dropout and data order.")] = None,
    precision: Annotated[str | None, typer.Option(help="auto, fp32, bf16 or fp16.")] = None,
    gradient_checkpointing: Annotated[
        bool | None,
        typer.Option("--gradient-checkpointing/--no-gradient-checkpointing", help="Less memory, more time."),
    ] = None,
    merge: Annotated[bool, typer.Option(help="Also write OUT/merged: base + adapter in one model.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint in OUT.")] = False,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Any setting as FIELD=VALUE (repeatable).")
    ] = None,
    launcher: Launcher = "none",
    accelerate_config: Annotated[
        str | None,
        typer.Option(
            help="For --launcher accelerate: cpu, ddp, zero2, zero3, fsdp (shipped) or a YAML file."
        ),
    ] = None,
) -> None:
    """Fine-tune MODEL on the export DATA and write OUT (settings resolve: preset < --config < options)."""
    if ctx.invoked_subcommand is not None:
        return
    from gap.train._config import parse_assignments, resolve

    overrides: dict[str, Any] = {
        **parse_assignments(set_ or []),
        "model": model,
        "data": str(data) if data else None,
        "out": str(out) if out else None,
        "preset": preset,
        "adapter_init": adapter_init,
        "max_steps": max_steps,
        "epochs": epochs,
        "finetuning": finetuning,
        "lora_r": lora_r,
        "lora_alpha": lora_alpha,
        "lora_dropout": lora_dropout,
        "lora_targets": lora_targets,
        "lora_target_regex": lora_target_regex,
        "train_vision": train_vision,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "grad_accum": grad_accum,
        "cutoff": cutoff,
        "max_pixels": max_pixels,
        "val_fraction": val_fraction,
        "seed": seed,
        "precision": precision,
        "gradient_checkpointing": gradient_checkpointing,
        "merge": merge or None,
    }
    resolved = resolve(toml=config, overrides=overrides)
    if not resolved.model or not resolved.data or not resolved.out:
        raise ConfigError("gap train needs --model, --data and --out (or a --config that sets them)")
    from gap.train._run import is_main_process, save_settings

    saved = save_settings(resolved, Path(resolved.out)) if is_main_process() else None
    if launcher == "accelerate":
        _launch_accelerate(Path(resolved.out) / "train_config.json", resume, accelerate_config)
        return
    if launcher != "none":
        raise ConfigError(f"unknown --launcher {launcher!r}: none or accelerate")
    if is_main_process():
        console.print(_settings_table(resolved.to_dict(), f"training settings (saved to {saved})"))
    from gap.train._run import train as run_training

    result = run_training(resolved, resume=resume)
    if is_main_process():
        _print_summary(result.summary, Path(resolved.out))


def _launch_accelerate(settings_file: Path, resume: bool, accelerate_config: str | None) -> None:
    from gap.train._launch import accelerate_config as config_file
    from gap.train._launch import launch_command

    yaml = config_file(accelerate_config, settings_file.parent) if accelerate_config else None
    command = launch_command(settings_file, config_file=yaml, resume=resume)
    console.print("running: " + " ".join(command))
    code = subprocess.call(command)
    if code:
        raise typer.Exit(code)


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    losses = summary["losses"]
    rows = {
        "steps": summary["steps"],
        "loss (first -> last)": f"{losses[0]:.4f} -> {losses[-1]:.4f}" if losses else "-",
        "eval loss": f"{summary['eval_losses'][-1]['loss']:.4f}" if summary["eval_losses"] else "-",
        "samples/s": f"{summary['samples_per_s']:.2f}",
        "wall time": f"{summary['wall_time_s']:.1f} s",
        "dropped (too long)": len(summary["data"]["dropped"]),
        "summary": out / "training_summary.json",
    }
    if summary["merged"]:
        rows["merged model"] = summary["merged"]
    console.print(_settings_table(rows, "training done"))
    if summary["vllm_servable"]:
        rank = summary["settings"]["lora_r"]
        console.print(
            f"vLLM can serve this adapter: vllm serve BASE --enable-lora --lora-modules gap={out} "
            f"--max-lora-rank {max(rank, 8)}, then GAP_MODEL=openai:gap"
        )
    elif summary["settings"]["finetuning"] == "lora":
        console.print(f"vLLM cannot serve this adapter as LoRA ({summary['vllm_reason']}); use --merge")
    console.print(f"play against it: gap serve --adapter {out}")
