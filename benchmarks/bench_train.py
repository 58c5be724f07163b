#!/usr/bin/env python3
"""Samples/s of `gap train` against a plain TRL SFTTrainer + peft script, in one run (ratio printed).

Both train the same random-weight Qwen2-VL built from a config (no download; ``--size bench`` is about
17 M parameters, ``--size gpu`` about 1.5 B), on the same single-turn records, with the same LoRA
targets (the language model's projections), batch size, steps, learning rate and precision, and no
checkpoints. Each side loads the model fresh; ``--repeats`` alternates the two and keeps each side's
best run, since a shared machine swings by tens of percent; samples per CPU-second (process time of
the training loop) is printed beside samples/s, as it moves much less when other jobs share the CPUs.
On a GPU the peak allocated memory of each run is reported too.

    python benchmarks/bench_train.py --threads 1 --repeats 5   # CPU, ~20 M model, 20 steps of batch 4
    python benchmarks/bench_train.py --size gpu --precision bf16 --steps 30 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

QUESTIONS = [
    ("How many dogs are there?", "There are two dogs."),
    ("What colour is the car?", "The car is red."),
    ("What does the sign say?", "It says STOP."),
    ("Where is the cat?", "Under the table."),
    ("Is the sky cloudy?", "Yes, it is overcast."),
    ("What is in the picture?", "A street with a bus."),
]


def make_export(root: Path, records: int, image_size: tuple[int, int]) -> Path:
    import numpy as np
    from PIL import Image

    from gap.data import Message, Provenance, Record, export_records

    rng = np.random.default_rng(0)
    rows = []
    for index in range(records):
        path = root / "src" / f"img{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (*image_size[::-1], 3), dtype=np.uint8)).save(path)
        question, answer = QUESTIONS[index % len(QUESTIONS)]
        rows.append(
            Record(
                id=f"r{index}",
                image=str(path),
                image_id=f"i{index}",
                messages=(Message("user", question), Message("assistant", answer)),
                provenance=Provenance(source="bench"),
            )
        )
    export_records(rows, root / "export", fmt="sharegpt")
    return root / "export"


def _reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak() -> int | None:
    import torch

    return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None


def run_gap(model: Path, data: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    from gap.train import resolve, train

    config = resolve(
        overrides={
            "model": str(model),
            "data": str(data),
            "out": str(out),
            "max_steps": args.steps,
            "batch_size": args.batch,
            "learning_rate": 1e-4,
            "warmup_ratio": 0.0,
            "precision": args.precision,
            "save_steps": 10**6,
            "lora_dropout": 0.0,
            "max_pixels": 10**8,
            "cutoff": 10**6,
        }
    )
    _reset_peak()
    summary = train(config, show_progress=False).summary
    samples = args.steps * args.batch
    return {
        "samples_per_s": summary["samples_per_s"],
        "samples_per_cpu_s": samples / summary["cpu_time_s"],
        "wall_s": summary["wall_time_s"],
        "peak": _peak(),
    }


def _text(text: str) -> dict[str, str]:
    return {"type": "text", "text": text}


def run_trl(model_dir: Path, data: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The plain script a TRL user writes: prompt/completion rows, SFTTrainer, a LoraConfig."""
    import datasets
    import peft
    import torch
    import transformers
    from PIL import Image
    from trl import SFTConfig, SFTTrainer

    from gap.data import read_records
    from gap.models.transformers_backend import load_processor

    rows = []
    for record in read_records(data):
        rows.append(
            {
                "images": [Image.open(record.image).convert("RGB")],
                "prompt": [
                    {
                        "role": "user",
                        "content": [{"type": "image"}, {"type": "text", "text": record.question}],
                    }
                ],
                "completion": [{"role": "assistant", "content": [_text(record.answer)]}],
            }
        )
    processor = load_processor(transformers, str(model_dir))
    bf16 = args.precision == "bf16"
    dtype = torch.bfloat16 if bf16 else torch.float32
    model = transformers.AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype)
    lora = peft.LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=r"model\.language_model\..*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
    )
    config = SFTConfig(
        output_dir=str(out),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        learning_rate=1e-4,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        max_length=None,
        bf16=bf16,
        gradient_checkpointing=False,
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=True,
        seed=0,
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=processor,
        peft_config=lora,
    )
    trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
    _reset_peak()
    started, cpu_started = time.monotonic(), time.process_time()
    output = trainer.train()
    return {
        "samples_per_s": float(output.metrics["train_samples_per_second"]),
        "samples_per_cpu_s": args.steps * args.batch / (time.process_time() - cpu_started),
        "wall_s": round(time.monotonic() - started, 3),
        "peak": _peak(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=["tiny", "bench", "gpu"], default="bench")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--records", type=int, default=32)
    parser.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="fp32")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    import torch
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)  # one thread spins less when other jobs share the CPUs

    from gap.train._tiny import make_tiny_family

    transformers.logging.set_verbosity_error()
    root = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        image_size = (448, 448) if args.size == "gpu" else (56, 56)
        model_dir = make_tiny_family("qwen2_vl", root / "model", size=args.size)
        loaded = transformers.AutoModelForImageTextToText.from_pretrained(model_dir)
        params = sum(p.numel() for p in loaded.parameters())
        del loaded
        data = make_export(root / "data", args.records, image_size)
        best: dict[str, dict[str, Any]] = {}
        for repeat in range(args.repeats):
            for name, run in (("gap train", run_gap), ("TRL SFTTrainer + peft", run_trl)):
                result = run(model_dir, data, root / f"out-{name[:3]}-{repeat}", args)
                rate, per_cpu, wall = result["samples_per_s"], result["samples_per_cpu_s"], result["wall_s"]
                print(
                    f"{name:24s} {rate:7.2f} samples/s {per_cpu:7.2f} per CPU-s  ({wall:.1f} s)", flush=True
                )
                if name not in best or rate > best[name]["samples_per_s"]:
                    best[name] = result
        ours, theirs = best["gap train"], best["TRL SFTTrainer + peft"]
        ratio = ours["samples_per_s"] / theirs["samples_per_s"]
        cpu_ratio = ours["samples_per_cpu_s"] / theirs["samples_per_cpu_s"]
        cuda = torch.cuda.is_available()
        device = torch.cuda.get_device_name(0) if cuda else f"CPU ({os.cpu_count()} cores)"
        print()
        print(f"model: random Qwen2-VL, {params / 1e6:.1f} M parameters; device: {device}")
        print(f"steps {args.steps}, batch {args.batch}, {args.records} records, precision {args.precision}")
        print("| method | samples/s | samples per CPU-second | peak GPU memory |")
        print("|---|---|---|---|")
        for name, result in best.items():
            peak = f"{result['peak'] / 2**30:.2f} GiB" if result["peak"] is not None else "-"
            print(f"| {name} | {result['samples_per_s']:.2f} | {result['samples_per_cpu_s']:.2f} | {peak} |")
        print(
            f"ratio gap train / TRL: {ratio:.2f}x samples/s, {cpu_ratio:.2f}x per CPU-second (target >= 1.0x)"
        )
        if args.json:
            figures = {"params": params, "device": device, "args": vars(args) | {"json": str(args.json)}}
            figures |= {"gap": ours, "trl": theirs, "ratio": ratio, "cpu_ratio": cpu_ratio}
            args.json.write_text(json.dumps(figures, indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
