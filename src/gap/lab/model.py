"""The lab's base model: a tiny VLM trained from random weights on a curriculum with known blind spots.

The curriculum comes from the world: the strong question types get many examples, the weak ones
few, so the game has real weaknesses to find. A share of its examples is in the game's exact turn
format (the question, then :data:`~gap.game.taint.PLAIN_INSTRUCTION` or
:data:`~gap.game.taint.TAINT_INSTRUCTION` after the separator, the latter answered with a
plausible wrong answer), so the model itself learns to follow the taint instruction; how often it
does is measured in the game (:func:`gap.lab.loop.taint_compliance`). The game's system prompt
cannot ride in an export's records (user and assistant turns only), so the model's chat template
renders :data:`~gap.game.taint.SYSTEM_PROMPT` as its default system prompt, as Qwen2-VL's renders
"You are a helpful assistant.": `gap serve` (which sends it), `gap train` and `gap eval` (which send
none) then all show the model the same prompt.

It is trained by the real trainer (`gap train --finetuning full`, in process) and cached by the
hash of its recipe, so a second run reuses it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gap.data import Message, Provenance, Record, export_records
from gap.errors import GapError
from gap.game.taint import CLAUSE_SEPARATOR, PLAIN_INSTRUCTION, SYSTEM_PROMPT, TAINT_INSTRUCTION
from gap.lab import world
from gap.lab._cli import run_gap
from gap.train._tiny import Family

CURRICULUM_VERSION = 5
"""Bump when the curriculum's construction changes, so cached base models are rebuilt."""
RECIPE_FILE = "lab_recipe.json"


@dataclass(frozen=True)
class Recipe:
    """Everything the base model depends on; its hash names the cache folder."""

    family: Family = "qwen2_vl"
    scenes: int = 300
    per_scene: dict[str, int] = field(
        default_factory=lambda: {"colour": 3, "existence": 3, "counting": 0, "position": 0}
    )
    """Questions of each type per complex scene (4 objects or more): the strong types many, the weak
    types none; where a weak type has none, a complex scene gets one with chance ``weak_share``."""
    simple: dict[str, int] = field(
        default_factory=lambda: {"colour": 2, "existence": 2, "counting": 2, "position": 1}
    )
    """Questions of each type per simple scene (the tainted pool's kind): every type, so the model is
    right where the game's tainted rounds assume it is, and weak only on complex scenes."""
    weak_share: float = 0.05
    formats: dict[str, float] = field(default_factory=lambda: {"bare": 0.4, "plain": 0.3, "taint": 0.3})
    """Shares of the bare question, the game's plain turn and its instructed (taint) turn."""
    history_share: float = 0.3
    """Share of examples that carry an earlier question and answer, as later turns of a round do."""
    steps: int = 300
    batch_size: int = 16
    learning_rate: float = 1e-3
    language_init_std: float = 0.1
    """The deviation of the language model's random weights: the config's 0.02 keeps a model this
    narrow answering from the question alone for thousands of steps (docs/lab.md)."""
    train_vision: bool = False
    """Whether the vision tower trains too; left at its random weights, its tokens already tell a
    cell's colour apart (a linear probe: 0.96), and trained from the start it became a constant bias."""
    seed: int = 0
    canvas: int = world.CANVAS

    @property
    def weak_types(self) -> list[str]:
        return [t for t in world.QUESTION_TYPES if self.per_scene.get(t, 0) == 0]

    def key(self) -> str:
        payload = json.dumps(
            {"recipe": dataclasses.asdict(self), "version": CURRICULUM_VERSION}, sort_keys=True
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def default_cache() -> Path:
    """``$XDG_CACHE_HOME/gap/lab`` (``~/.cache/gap/lab``): base models shared by every lab run."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "gap" / "lab"


def cached_folder(recipe: Recipe, cache: Path) -> Path:
    """Where ``recipe``'s base model lives in ``cache``: named by its family and its hash."""
    return cache / f"{recipe.family}-{recipe.key()}"


def game_turn(question: str, *, instructed: bool) -> str:
    """The last user message of a game turn, as :func:`gap.game.taint.turn_prompt` builds it."""
    return f"{question}{CLAUSE_SEPARATOR}{TAINT_INSTRUCTION if instructed else PLAIN_INSTRUCTION}"


def tokenizer_corpus(scenes: Sequence[world.Scene]) -> list[str]:
    """The prompts and questions the model will read, so its BPE spends few tokens on them, and every
    answer alone: a reply starts with its answer, with no space before it, and a BPE that only saw
    " red" spells a reply's "red" letter by letter (the garbled "bove" of earlier lab runs)."""
    lines = [SYSTEM_PROMPT, PLAIN_INSTRUCTION, TAINT_INSTRUCTION]
    for scene in scenes[:40]:
        for qtype in world.QUESTION_TYPES:
            lines += [f"{q.text} {q.answer}" for q in world.questions(scene, qtype)]
    lines += [word for qtype in world.QUESTION_TYPES for word in world.answer_words(qtype)] * 2
    return lines * 4


def curriculum(recipe: Recipe, scenes: Sequence[world.Scene], images: Path) -> list[Record]:
    """The training records: per scene, the recipe's questions in its mix of formats."""
    rng = random.Random(f"gap.lab.curriculum:{recipe.seed}")
    formats, weights = zip(*recipe.formats.items(), strict=True)
    records: list[Record] = []
    for scene in scenes:
        image = str((images / f"{scene.scene_id}.png").resolve())
        counts = recipe.simple if scene.tainted else recipe.per_scene
        plan = [t for t in world.QUESTION_TYPES for _ in range(counts.get(t, 0))]
        if not scene.tainted:
            plan += [t for t in recipe.weak_types if rng.random() < recipe.weak_share]
        for index, qtype in enumerate(plan):
            if not world.questions(scene, qtype):
                continue
            question = world.sample_question(scene, qtype, rng)
            kind = rng.choices(formats, weights)[0]
            if kind == "bare":
                turn = (question.text, question.answer)
            else:
                instructed = kind == "taint"
                answer = world.wrong_answer(question, rng) if instructed else question.answer
                turn = (game_turn(question.text, instructed=instructed), answer)
            turns = [turn]
            if rng.random() < recipe.history_share:
                earlier_type = rng.choice([t for t in plan if world.questions(scene, t)])
                earlier = world.sample_question(scene, earlier_type, rng)
                turns.insert(0, (earlier.text, earlier.answer))
            messages = tuple(
                message
                for user, assistant in turns
                for message in (Message("user", user), Message("assistant", assistant))
            )
            records.append(
                Record(
                    id=f"{scene.scene_id}-{index}",
                    image=image,
                    image_id=scene.scene_id,
                    messages=messages,
                    provenance=Provenance(source="gap-lab-curriculum"),
                )
            )
    return records


def _train_command(model: Path, data: Path, out: Path, recipe: Recipe) -> list[str]:
    return [
        "train",
        "--model",
        str(model),
        "--data",
        str(data),
        "--out",
        str(out),
        "--finetuning",
        "full",
        *(["--train-vision"] if recipe.train_vision else []),
        "--max-steps",
        str(recipe.steps),
        "--batch-size",
        str(recipe.batch_size),
        "--learning-rate",
        str(recipe.learning_rate),
        "--precision",
        "fp32",
        "--seed",
        str(recipe.seed),
        "--max-pixels",
        str(recipe.canvas**2),
        "--set",
        "warmup_ratio=0.05",
        "--set",
        f"save_steps={recipe.steps + 1}",
    ]


def build_base(recipe: Recipe, cache: Path | None = None) -> Path:
    """The base model folder for ``recipe``: from the cache, or trained now (and cached)."""
    from gap.train._tiny import make_tiny_family

    if "'" in SYSTEM_PROMPT or "\\" in SYSTEM_PROMPT:
        raise ValueError("the system prompt must fit in a Jinja string literal")
    target = cached_folder(recipe, cache or default_cache())
    if (target / RECIPE_FILE).is_file():
        return target
    work = target.parent / f".{target.name}.{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    scenes = world.draw_scenes(recipe.scenes, seed=1_000_000 + recipe.seed, canvas=recipe.canvas)
    images = work / "images"
    world.write_images(scenes, images, canvas=recipe.canvas)
    records = curriculum(recipe, scenes, images)
    data = work / "curriculum"
    export_records(records, data, fmt="sharegpt", name="lab", manifest={"source": "gap-lab-curriculum"})
    init = make_tiny_family(
        recipe.family,
        work / "init",
        size="lab",
        corpus=tokenizer_corpus(scenes),
        default_system=SYSTEM_PROMPT,
        language_init_std=recipe.language_init_std,
    )
    run_gap(_train_command(init, data, work / "model", recipe))
    summary = json.loads((work / "model" / "training_summary.json").read_text(encoding="utf-8"))
    for checkpoint in (work / "model").glob("checkpoint-*"):
        shutil.rmtree(checkpoint)
    (work / "model" / RECIPE_FILE).write_text(
        json.dumps(
            {
                "recipe": dataclasses.asdict(recipe),
                "key": recipe.key(),
                "records": len(records),
                "losses": summary["losses"],
                "wall_time_s": summary["wall_time_s"],
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    if not (target / RECIPE_FILE).is_file():  # another run may have finished the same recipe first
        shutil.rmtree(target, ignore_errors=True)
        (work / "model").rename(target)
    shutil.rmtree(work, ignore_errors=True)
    return target


_BUILD_IN_SUBPROCESS = """
import json, sys
from pathlib import Path
import torch
torch.set_num_threads(int(sys.argv[3]))
from gap.lab.model import Recipe, build_base
build_base(Recipe(**json.loads(sys.argv[1])), Path(sys.argv[2]))
"""


def build_bases(recipes: Sequence[Recipe], cache: Path | None = None, *, threads: int = 1) -> list[Path]:
    """:func:`build_base` of every recipe, the uncached ones side by side: the first in this process,
    each other in a subprocess. Each trainer runs on ``threads`` threads, so on a 2-core machine two
    base models train in the time of one."""
    cache = cache or default_cache()
    missing = [r for r in recipes if not (cached_folder(r, cache) / RECIPE_FILE).is_file()]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _BUILD_IN_SUBPROCESS,
                json.dumps(dataclasses.asdict(recipe)),
                str(cache),
                str(threads),
            ],
            env={**os.environ, "OMP_NUM_THREADS": str(threads)},
        )
        for recipe in missing[1:]
    ]
    try:
        if missing:
            build_base(missing[0], cache)
        failed = [recipe.family for recipe, worker in zip(missing[1:], workers, strict=True) if worker.wait()]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    if failed:
        raise GapError(f"building the base model of {', '.join(failed)} failed (its output is above)")
    return [build_base(recipe, cache) for recipe in recipes]


def recipe_info(model: Path) -> dict[str, object]:
    """What :func:`build_base` recorded about a cached base model."""
    info: dict[str, object] = json.loads((model / RECIPE_FILE).read_text(encoding="utf-8"))
    return info
