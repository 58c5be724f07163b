"""Helpers for the training tests: records of a small GAP export and the settings of the 40-step runs."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image as PILImage

from gap.data import Message, Provenance, Record

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
CONVERSATIONS = [
    [("How many dogs are there?", "There are two dogs.")],
    [("What colour is the car?", "The car is red.")],
    [("What is in the picture?", "A street."), ("Is there a bus on the left?", "No, there is no bus.")],
    [("What does the sign say?", "It says STOP.")],
    [("Where is the cat?", "Under the table.")],
    [("Is the sky cloudy?", "Yes, it is overcast.")],
]


def _png(path: Path, colour: tuple[int, int, int], size: tuple[int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    PILImage.new("RGB", size, colour).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return path


def make_records(folder: Path, *, splits: tuple[str, ...] = ()) -> list[Record]:
    """Six records on four images (one multi-turn); ``splits`` assigns splits in order, else train."""
    images = [_png(folder / f"img{i}.png", c, (40 + 8 * i, 30)) for i, c in enumerate(COLOURS)]
    records = []
    for index, turns in enumerate(CONVERSATIONS):
        messages = tuple(m for q, a in turns for m in (Message("user", q), Message("assistant", a)))
        records.append(
            Record(
                id=f"r{index}",
                image=str(images[index % len(images)]),
                image_id=f"i{index % len(images)}",
                messages=messages,
                provenance=Provenance(source="gap", players=("p1",), posterior=0.9, theta=0.8),
                split=splits[index] if index < len(splits) else "train",
            )
        )
    return records


LOSS_STEPS = 40
# Tiny random models learn through LoRA only when the head is adapted too: their 32-dim hidden states
# give near-uniform logits that no change inside the language model can sharpen within 40 steps.
HEAD_TOO = (
    r"model\.(language_model|text_model)\..*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    r"|lm_head"
)


def loss_settings(model: Path, data: Path, out: Path, **extra: object) -> dict[str, object]:
    """The settings of the 40-step runs: LoRA, fp32, constant learning rate, a checkpoint at step 20."""
    return {
        "model": str(model),
        "data": str(data),
        "out": str(out),
        "max_steps": LOSS_STEPS,
        "batch_size": 2,
        "learning_rate": 1e-2,
        "lr_scheduler": "constant",
        "warmup_ratio": 0.0,
        "lora_r": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.0,
        "lora_target_regex": HEAD_TOO,
        "precision": "fp32",
        "save_steps": LOSS_STEPS // 2,
        "seed": 0,
        "merge": True,
        **extra,
    }
