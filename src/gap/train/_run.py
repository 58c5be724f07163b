"""One training run: checks, data, model, LoRA (peft), ``transformers.Trainer``, summary, merge.

Why ``transformers.Trainer`` and not TRL's ``SFTTrainer``: TRL masks the prompt of VLM data only for
chat templates it recognises (or that carry ``{% generation %}`` markers), and treats multi-turn
``messages`` data as all-loss. GAP's collator finds the answer tokens of every turn for any template,
so the plain Trainer is enough; it brings checkpoints, resume, accelerate/DeepSpeed/FSDP and logging.

Everything cheap is checked before any weights load: settings, the data (``gap data validate``), the
model's config (does it take images?), the precision, and the checkpoint to resume from.
"""

from __future__ import annotations

import json
import os
import re
import resource
import sys
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from gap.data._export import gap_version
from gap.data._io import atomic_write_json
from gap.errors import ConfigError
from gap.train._collate import AssistantOnlyCollator
from gap.train._config import TrainConfig
from gap.train._data import Example, load_training_data

SUMMARY_FILE = "training_summary.json"
SETTINGS_FILE = "train_config.json"
MERGED_DIR = "merged"
_LIBRARIES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets")
TRAIN_INSTALL_HINT = "pip install 'gap[train]'"


@dataclass(frozen=True)
class TrainResult:
    out: Path
    summary: dict[str, Any]


def import_train_stack() -> tuple[Any, Any, Any]:
    """``(torch, transformers, peft)`` or a :class:`ConfigError` naming the extra to install."""
    try:
        import peft
        import torch
        import transformers
    except ImportError as exc:
        raise ConfigError(
            f"gap train needs torch, transformers and peft: {TRAIN_INSTALL_HINT} ({exc})"
        ) from None
    return torch, transformers, peft


def is_main_process() -> bool:
    """Rank 0, or not launched by a distributed launcher (which sets ``RANK``)."""
    return os.environ.get("RANK", "0") == "0"


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in _LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def check_vision_model(transformers: Any, model: str) -> Any:
    """The model's config, or a one-sentence error if it cannot be loaded or takes no images."""
    try:
        config = transformers.AutoConfig.from_pretrained(model)
    except Exception as exc:  # missing folder, no network for a hub id, unknown architecture
        raise ConfigError(
            f"cannot load the config of {model!r} (a local folder, or a hub id already in the cache "
            f"when HF_HUB_OFFLINE=1): {type(exc).__name__}: {exc}"
        ) from None
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    if config.model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        raise ConfigError(
            f"{model!r} is a {config.model_type!r} model without image input; gap train fine-tunes "
            "vision-language models that AutoModelForImageTextToText loads (Qwen2-VL, Idefics3/SmolVLM, "
            "LLaVA, ...)"
        )
    return config


def resolve_precision(torch: Any, precision: str) -> str:
    """``fp32``, ``bf16`` or ``fp16`` for this machine; bf16 or fp16 asked where unavailable is an error."""
    cuda = bool(torch.cuda.is_available())
    bf16 = cuda and bool(torch.cuda.is_bf16_supported())
    if precision == "auto":
        return "bf16" if bf16 else "fp16" if cuda else "fp32"
    if precision == "bf16" and not bf16:
        where = "this GPU does not support it (Ampere or newer does)" if cuda else "this machine has no GPU"
        raise ConfigError(f"precision bf16 asked, but {where}: use --precision fp32 (or fp16 on a GPU)")
    if precision == "fp16" and not cuda:
        raise ConfigError("precision fp16 needs a CUDA GPU; this machine has none: use --precision fp32")
    return precision


def find_checkpoint(out: Path) -> str:
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(out)) if out.is_dir() else None  # type: ignore[no-untyped-call]
    if last is None:
        raise ConfigError(f"--resume: {out} holds no checkpoint-* folder to resume from")
    return str(last)


def language_model_prefix(model: Any) -> str:
    """The module name of the language model inside a VLM (``model.language_model``, ...)."""
    decoder = model.get_decoder()
    for name, module in model.named_modules():
        if module is decoder and name:
            return str(name)
    raise ConfigError(f"cannot find the language model inside {type(model).__name__}")


def lora_target_regex(config: TrainConfig, lm_prefix: str) -> str:
    """A full-name regex (peft fullmatches it) for the LoRA targets; language model only by default."""
    if config.lora_target_regex:
        return config.lora_target_regex
    names = "|".join(re.escape(name) for name in config.lora_targets)
    scope = ".*" if config.train_vision else re.escape(lm_prefix) + r"\..*"
    return rf"{scope}\.({names})"


def vllm_servable(peft_model: Any, lm_prefix: str) -> tuple[bool, str]:
    """Whether vLLM can serve the adapter as LoRA: language-model targets only, no ``modules_to_save``."""
    config = peft_model.peft_config["default"]
    if config.modules_to_save:
        return False, "it saves whole modules (modules_to_save), which vLLM refuses: serve OUT/merged"
    outside = sorted(
        name
        for name, module in peft_model.named_modules()
        if hasattr(module, "lora_A") and f".{lm_prefix}." not in f".{name}"
    )
    if outside:
        return False, f"it has LoRA weights outside the language model ({outside[0]}, ...), which vLLM drops"
    return True, "LoRA on the language model only"


def _trainable(model: Any) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


def _freeze_for_full(model: Any, lm_prefix: str, train_vision: bool) -> None:
    """Full fine-tuning trains the language model and head; vision tower and projector stay frozen."""
    if train_vision:
        return
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.startswith(lm_prefix + ".") or name.startswith("lm_head.")


def _drop_long(
    collator: AssistantOnlyCollator, examples: list[Example], cutoff: int
) -> tuple[list[Example], list[dict[str, Any]]]:
    kept, dropped = [], []
    for example in examples:
        n = collator.length(example)
        if n > cutoff:
            dropped.append({"id": example.id, "tokens": n})
        else:
            kept.append(example)
    return kept, dropped


def out_of_memory_advice(config: TrainConfig) -> str:
    steps = [f"lower batch_size (now {config.batch_size}) and raise grad_accum to keep the effective batch"]
    if not config.gradient_checkpointing:
        steps.append("turn on --gradient-checkpointing")
    steps.append(f"lower --max-pixels (now {config.max_pixels}) or --cutoff (now {config.cutoff})")
    return "the GPU ran out of memory: " + "; ".join(steps)


def _peak_memory(torch: Any) -> dict[str, Any]:
    if torch.cuda.is_available():
        return {"device": "cuda", "peak_bytes": int(torch.cuda.max_memory_allocated())}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"device": "cpu", "peak_bytes": int(rss if sys.platform == "darwin" else rss * 1024)}


def _training_arguments(
    transformers: Any, config: TrainConfig, precision: str, *, has_val: bool, cuda: bool
) -> Any:
    return transformers.TrainingArguments(
        output_dir=config.out,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # below 1: a ratio of the total steps
        weight_decay=config.weight_decay,
        adam_beta2=config.adam_beta2,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        logging_steps=1,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        eval_strategy="steps" if has_val else "no",
        eval_steps=config.eval_steps,
        seed=config.seed,
        data_seed=config.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        gradient_checkpointing=config.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        remove_unused_columns=False,
        dataloader_num_workers=config.workers,
        dataloader_pin_memory=cuda,
        report_to=_report_to(),
        disable_tqdm=True,
    )


def _report_to() -> list[str]:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return []
    return ["tensorboard"]


def _load_model(transformers: Any, torch: Any, config: TrainConfig, precision: str) -> Any:
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    if precision == "fp16" and config.finetuning == "lora":
        dtype = torch.float16  # adapters stay fp32 (peft), so fp16 AMP can unscale their gradients
    try:
        return transformers.AutoModelForImageTextToText.from_pretrained(config.model, dtype=dtype)
    except Exception as exc:  # broken weights, an architecture this transformers cannot build
        raise ConfigError(
            f"cannot load the weights of {config.model!r}: {type(exc).__name__}: {exc}"
        ) from None


def _trainable_model(
    transformers: Any, torch: Any, peft: Any, config: TrainConfig, precision: str
) -> tuple[Any, str]:
    """The base model with LoRA (new, or ``adapter_init`` continued), or frozen for full fine-tuning."""
    model = _load_model(transformers, torch, config, precision)
    lm_prefix = language_model_prefix(model)
    if config.finetuning == "full":
        _freeze_for_full(model, lm_prefix, config.train_vision)
        return model, lm_prefix
    if config.adapter_init:
        return peft.PeftModel.from_pretrained(model, config.adapter_init, is_trainable=True), lm_prefix
    lora = peft.LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=lora_target_regex(config, lm_prefix),
    )
    try:
        return peft.get_peft_model(model, lora), lm_prefix
    except ValueError as exc:  # no module matched the targets
        raise ConfigError(f"LoRA targets: {exc}") from None


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    callbacks: list[Any] | None = None,
    show_progress: bool = True,
) -> TrainResult:
    """Train as ``config`` says and write ``OUT`` (adapter or model, processor, summary, checkpoints)."""
    out = Path(config.out)
    if not config.model or not config.data or not config.out:
        raise ConfigError("gap train needs --model, --data and --out")
    data = load_training_data(Path(config.data), val_fraction=config.val_fraction, seed=config.seed)
    torch, transformers, peft = import_train_stack()
    check_vision_model(transformers, config.model)
    precision = resolve_precision(torch, config.precision)
    checkpoint = find_checkpoint(out) if resume else None

    from gap.models.transformers_backend import load_processor

    try:
        processor = load_processor(transformers, config.model)
    except Exception as exc:  # no processor files, a tokenizer this transformers cannot read
        reason = f"{type(exc).__name__}: {exc}"
        raise ConfigError(f"cannot load the processor of {config.model!r}: {reason}") from None
    collator = AssistantOnlyCollator(processor, max_pixels=config.max_pixels)
    train_set, dropped = _drop_long(collator, data.train, config.cutoff)
    val_set, dropped_val = _drop_long(collator, data.val, config.cutoff)
    if not train_set:
        raise ConfigError(f"every training sample is longer than cutoff={config.cutoff} tokens")

    transformers.set_seed(config.seed)
    model, lm_prefix = _trainable_model(transformers, torch, peft, config, precision)
    trainable, total = _trainable(model)

    from gap.train._progress import RichProgress

    cuda = bool(torch.cuda.is_available())
    args = _training_arguments(transformers, config, precision, has_val=bool(val_set), cuda=cuda)
    progress = RichProgress(enabled=show_progress, samples_per_step=config.batch_size * config.grad_accum)
    trainer = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set or None,
        data_collator=collator,
        callbacks=[progress, *(callbacks or [])],
    )
    trainer.remove_callback(transformers.trainer_callback.PrinterCallback)  # the Rich bar reports instead
    started, cpu_started = time.monotonic(), time.process_time()
    try:
        output = trainer.train(resume_from_checkpoint=checkpoint)
    except torch.OutOfMemoryError as exc:
        raise ConfigError(out_of_memory_advice(config)) from exc
    wall, cpu = time.monotonic() - started, time.process_time() - cpu_started
    trainer.save_model(str(out))
    if not trainer.is_world_process_zero():
        return TrainResult(out=out, summary={})
    processor.save_pretrained(str(out))

    history = trainer.state.log_history
    losses = [float(entry["loss"]) for entry in history if "loss" in entry]
    eval_losses = [
        {"step": int(entry["step"]), "loss": float(entry["eval_loss"])}
        for entry in history
        if "eval_loss" in entry
    ]
    servable, reason = (
        vllm_servable(model, lm_prefix)
        if config.finetuning == "lora"
        else (False, "full fine-tuning: a model")
    )
    merged = merge_adapter(model, processor, out / MERGED_DIR) if config.merge else None
    summary: dict[str, Any] = {
        "gap_version": gap_version(),
        "data": {
            "dir": str(Path(config.data).resolve()),
            "format": data.format,
            "hash": data.data_hash,
            "train": len(train_set),
            "val": len(val_set),
            "dropped": dropped + dropped_val,
            "ignored_splits": data.ignored_splits,
        },
        "settings": config.to_dict(),
        "precision": precision,
        "versions": _versions(),
        "resumed_from": checkpoint,
        "steps": int(trainer.state.global_step),
        "losses": losses,
        "eval_losses": eval_losses,
        "train_loss": float(output.training_loss),
        "wall_time_s": round(wall, 3),
        "cpu_time_s": round(cpu, 3),
        "samples_per_s": float(output.metrics.get("train_samples_per_second", 0.0)),
        "peak_memory": _peak_memory(torch),
        "parameters": {"trainable": trainable, "total": total},
        "lora_targets": lora_target_regex(config, lm_prefix) if config.finetuning == "lora" else None,
        "vllm_servable": servable,
        "vllm_reason": reason,
        "merged": str(merged) if merged else None,
    }
    atomic_write_json(out / SUMMARY_FILE, summary)
    return TrainResult(out=out, summary=summary)


def merge_adapter(peft_model: Any, processor: Any, target: Path) -> Path:
    """Base + adapter as one model folder with processor, tokenizer and chat template (plain HF loads it)."""
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(str(target))
    processor.save_pretrained(str(target))
    return target


def save_settings(config: TrainConfig, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / SETTINGS_FILE
    path.write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path
