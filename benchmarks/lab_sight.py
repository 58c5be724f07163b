"""Can the lab's tiny VLM learn to read its world's images? A bare training loop, for quick probes.

    python benchmarks/lab_sight.py --types colour --lone                 # reads a lone shape's colour
    python benchmarks/lab_sight.py                                       # all four types: the plateau
    python benchmarks/lab_sight.py --types-every 300 --steps 1400        # types added one at a time
    python benchmarks/lab_sight.py --caption-steps 800 --steps 1600      # captions of the grid first
    python benchmarks/lab_sight.py --init-std 0.1 --lr 1e-3 --steps 5000 --every 500   # past the plateau

`gap lab`'s base models are trained by `gap train` on a curriculum and come out blind (docs/lab.md,
"Where a base model's sight fails"). This loop strips everything else away to find where sight
fails: a random-weight lab Qwen2-VL (``gap.train._tiny``, size "lab", optionally wider), AdamW at a
constant rate, batches of fresh scenes (never one seen twice), loss on the first token of the true
answer only, the vision tower frozen by default. Every ``--every`` steps it prints the exact-match of
that first token on 240 held-out questions, by type and by scene kind (s: 1 to 3 objects, c: 4 to 6).
Chance is about 0.2 for colour, 0.5 for existence. With ``--caption-steps`` it first trains on
captions naming the nine cells in reading order, and prints the share of caption tokens it predicts
(teacher-forced) on 30 held-out scenes; the commas and the empty cells' "none" alone give about
0.79. It is a probe, not a recipe: nothing it trains is kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from gap.game.taint import SYSTEM_PROMPT
from gap.lab import world
from gap.lab.model import tokenizer_corpus


def _model(hidden: int, folder: Path, init_std: float | None) -> tuple[Any, Any]:
    import transformers

    from gap.models.transformers_backend import load_processor
    from gap.train import _tiny

    lab = _tiny._DIMS["lab"]
    _tiny._DIMS["lab"] = dataclasses.replace(lab, hidden=hidden, intermediate=2 * hidden)
    try:
        scenes = world.draw_scenes(300, seed=1_000_000)
        _tiny.make_tiny_family(
            "qwen2_vl",
            folder,
            size="lab",
            corpus=tokenizer_corpus(scenes),
            default_system=SYSTEM_PROMPT,
            language_init_std=init_std,
        )
    finally:
        _tiny._DIMS["lab"] = lab
    processor = load_processor(transformers, str(folder))
    processor.tokenizer.padding_side = "left"
    return processor, transformers.AutoModelForImageTextToText.from_pretrained(folder)


def _questions(
    processor: Any, seed: int, n: int, types: list[str], max_objects: int
) -> list[tuple[str, Any, int, str, bool]]:
    """``n`` (prompt, image, first answer token, type, simple) from fresh scenes of at most
    ``max_objects`` objects, each asking one of ``types`` it has an answer for."""
    rng = random.Random(seed)
    out: list[tuple[str, Any, int, str, bool]] = []
    for scene in world.draw_scenes(12 * n, seed=seed):
        usable = [t for t in types if world.questions(scene, t)]
        if len(scene.things) > max_objects or not usable:
            continue
        question = world.sample_question(scene, rng.choice(usable), rng)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question.text}]}]
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
        token = processor.tokenizer(question.answer, add_special_tokens=False)["input_ids"][0]
        out.append((prompt, [world.render(scene)], token, question.qtype, scene.tainted))
        if len(out) == n:
            break
    return out


def caption(scene: world.Scene) -> str:
    """The scene's nine grid cells in reading order: "none, red small circle, none, ..."."""
    cell = scene.canvas / world.GRID
    slots = ["none"] * world.GRID**2
    for thing in scene.things:
        slots[int(thing.y // cell) * world.GRID + int(thing.x // cell)] = (
            f"{thing.colour} {thing.size} {thing.shape}"
        )
    return ", ".join(slots)


def _captions(processor: Any, seed: int, n: int) -> list[tuple[str, Any, str]]:
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the picture."}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    return [(prompt, [world.render(scene)], caption(scene)) for scene in world.draw_scenes(n, seed=seed)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--types", default=",".join(world.QUESTION_TYPES), help="comma-separated")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=64, help="the language model's width")
    parser.add_argument(
        "--train",
        choices=["language", "merger", "all"],
        default="language",
        help="language: the vision tower stays frozen; merger: its merger trains too; all: all of it",
    )
    parser.add_argument("--lone", action="store_true", help="train and test on scenes of one object")
    parser.add_argument("--objects-every", type=int, default=0, help="allow one more object every N steps")
    parser.add_argument("--types-every", type=int, default=0, help="add the next of --types every N steps")
    parser.add_argument(
        "--caption-steps",
        type=int,
        default=0,
        help="first train N steps on captions of the grid (loss on every caption token)",
    )
    parser.add_argument(
        "--init-std",
        type=float,
        default=None,
        help="redraw the language model's weights with this deviation (the config's is 0.02)",
    )
    parser.add_argument("--every", type=int, default=200, help="evaluate every N steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    torch.manual_seed(args.seed)
    types = args.types.split(",")
    with tempfile.TemporaryDirectory() as folder:
        processor, model = _model(args.hidden, Path(folder), args.init_std)
    for name, parameter in model.named_parameters():
        in_vision = name.startswith("model.visual")
        parameter.requires_grad = (
            not in_vision or args.train == "all" or (args.train == "merger" and "merger" in name)
        )
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    test = _questions(processor, 10_000, 240, types, 1 if args.lone else world.MAX_OBJECTS)

    def last_logits(batch: list[tuple[str, Any, int, str, bool]]) -> Any:
        inputs = processor(
            text=[b[0] for b in batch], images=[b[1] for b in batch], return_tensors="pt", padding=True
        )
        return model(**inputs).logits[:, -1]

    def caption_logits(batch: list[tuple[str, Any, str]]) -> tuple[Any, Any, list[int]]:
        """Teacher-forced logits and targets of every caption, and each caption's token count."""
        inputs = processor(
            text=[p + c for p, _, c in batch], images=[b[1] for b in batch], return_tensors="pt", padding=True
        )
        lengths = [len(processor.tokenizer(c, add_special_tokens=False)["input_ids"]) for _, _, c in batch]
        return model(**inputs).logits[:, :-1], inputs["input_ids"][:, 1:], lengths

    def caption_loss(batch: list[tuple[str, Any, str]]) -> Any:
        logits, targets, lengths = caption_logits(batch)
        picked = [(logits[k, -n:], targets[k, -n:]) for k, n in enumerate(lengths)]
        return torch.nn.functional.cross_entropy(
            torch.cat([lg for lg, _ in picked]), torch.cat([t for _, t in picked])
        )

    held_captions = _captions(processor, 20_000, 30)

    started = time.monotonic()
    for step in range(args.steps + 1):
        if step % args.every == 0:
            model.eval()
            right: dict[str, list[bool]] = defaultdict(list)
            with torch.no_grad():
                for start in range(0, len(test), 60):
                    chunk = test[start : start + 60]
                    for guess, item in zip(last_logits(chunk).argmax(-1).tolist(), chunk, strict=True):
                        right[f"{item[3]}/{'s' if item[4] else 'c'}"].append(guess == item[2])
                if args.caption_steps:
                    logits, targets, lengths = caption_logits(held_captions)
                    for k, n in enumerate(lengths):
                        hits = (logits[k, -n:].argmax(-1) == targets[k, -n:]).tolist()
                        right["caption tokens"] += hits
            scores = " ".join(f"{k} {sum(v) / len(v):.2f}" for k, v in sorted(right.items()))
            print(f"step {step:5d}  {scores}  ({time.monotonic() - started:.0f} s)", flush=True)
            model.train()
        if step == args.steps:
            break
        if args.lone:
            most = 1
        else:
            most = (
                min(world.MAX_OBJECTS, 1 + step // args.objects_every)
                if args.objects_every
                else world.MAX_OBJECTS
            )
        now = types[: 1 + step // args.types_every] if args.types_every else types
        if step < args.caption_steps:
            loss = caption_loss(_captions(processor, step, args.batch))
        else:
            batch = _questions(processor, step, args.batch, now, most)
            loss = torch.nn.functional.cross_entropy(last_logits(batch), torch.tensor([b[2] for b in batch]))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


if __name__ == "__main__":
    main()
