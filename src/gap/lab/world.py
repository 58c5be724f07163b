"""The lab's world: procedurally drawn scenes whose scene graph is the truth of every question.

A scene is 1 to 6 flat shapes on a white canvas, each in its own cell of a 3 x 3 grid (so nothing
overlaps and every shape is drawn whole, which lets a test read the truth back from the pixels).
Scenes with at most :data:`TAINTED_MAX_OBJECTS` objects form the tainted pool, as the authors'
rule for COCO does. Question templates read like a player's question; a scene only gets the
instances that have exactly one true answer in it, and :func:`is_right` is the one comparison
that players, the oracle filter and the judge share.
"""

from __future__ import annotations

import io
import json
import random
import re
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from gap.errors import InputError

QUESTION_TYPES: tuple[str, ...] = ("counting", "colour", "position", "existence")
TAINTED_MAX_OBJECTS = 3
"""Scenes with fewer than 4 objects form the tainted pool (as the authors' COCO rule)."""
CANVAS = 56
"""Default pixels per side: a multiple of 28, so Qwen2-VL's patches tile it."""
MAX_OBJECTS = 6
GRID = 3
"""The canvas is a GRID x GRID grid of cells, one shape at most per cell."""

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (235, 200, 20),
    "purple": (140, 40, 170),
}
"""Colour names and their exact RGB (shapes are drawn without anti-aliasing, so pixels are exact)."""
SIZES: dict[str, float] = {"small": 4 / 56, "large": 7 / 56}
"""Size names and their radius as a share of the canvas side."""
BACKGROUND = (255, 255, 255)

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_ANSWER_WORDS: dict[str, tuple[str, ...]] = {
    "counting": tuple(str(i) for i in range(10)),
    "colour": tuple(COLOURS),
    "position": ("left", "right", "above", "below"),
    "existence": ("yes", "no"),
}
_OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above", "yes": "no", "no": "yes"}
_SYNONYMS = {
    **{word: str(i) for i, word in enumerate(_NUMBER_WORDS)},
    "none": "0",
    "violet": "purple",
    "top": "above",
    "bottom": "below",
    "under": "below",
}


@dataclass(frozen=True)
class Thing:
    """One shape; ``x``, ``y`` is its centre in pixels."""

    shape: str
    colour: str
    size: str
    x: int
    y: int


@dataclass(frozen=True)
class Scene:
    scene_id: str
    """Stable, derived from the seed and the scene's index."""
    things: tuple[Thing, ...]
    canvas: int = CANVAS
    """The side, in pixels, that the things' positions are drawn on."""

    @property
    def tainted(self) -> bool:
        return len(self.things) <= TAINTED_MAX_OBJECTS


@dataclass(frozen=True)
class Question:
    text: str
    qtype: str
    answer: str
    """The true answer, normalised (see :func:`normalise_answer`)."""


def _check_type(qtype: str) -> None:
    if qtype not in QUESTION_TYPES:
        raise InputError(f"unknown question type {qtype!r}; one of {', '.join(QUESTION_TYPES)}")


def _check_canvas(canvas: int) -> None:
    if canvas < 28 or canvas % 28:
        raise InputError(f"canvas must be a multiple of 28 pixels (at least 28), got {canvas}")


def _radius(size: str, canvas: int) -> int:
    return round(SIZES[size] * canvas)


def _draw_scene(rng: random.Random, n_objects: int, canvas: int) -> tuple[Thing, ...]:
    cell = canvas / GRID
    things = []
    for slot in rng.sample(range(GRID * GRID), n_objects):
        size = rng.choice(tuple(SIZES))
        radius = _radius(size, canvas)
        slack = max(0, int(cell / 2 - radius - 1))  # room to move inside the cell, one pixel kept free
        cx, cy = (slot % GRID + 0.5) * cell, (slot // GRID + 0.5) * cell
        x = int(cx) + rng.randint(-slack, slack)
        y = int(cy) + rng.randint(-slack, slack)
        things.append(Thing(rng.choice(SHAPES), rng.choice(tuple(COLOURS)), size, x, y))
    return tuple(sorted(things, key=lambda t: (t.y, t.x)))


def draw_scenes(n: int, seed: int, *, canvas: int = CANVAS) -> list[Scene]:
    """``n`` scenes of 1..6 objects; even indices are tainted (1..3 objects), odd ones untainted
    (4..6), so both pools get fair shares. Scene ``i`` depends only on ``seed`` and ``i``, unless it
    would repeat an earlier scene exactly (then it is drawn again), so every image is distinct."""
    if n < 0:
        raise InputError(f"n must be >= 0, got {n}")
    _check_canvas(canvas)
    scenes: list[Scene] = []
    seen: set[tuple[Thing, ...]] = set()
    for index in range(n):
        rng = random.Random(f"gap.lab:{seed}:{index}")
        low = 1 if index % 2 == 0 else TAINTED_MAX_OBJECTS + 1
        high = TAINTED_MAX_OBJECTS if index % 2 == 0 else MAX_OBJECTS
        things = _draw_scene(rng, rng.randint(low, high), canvas)
        while things in seen:
            things = _draw_scene(rng, len(things), canvas)
        seen.add(things)
        scenes.append(Scene(f"lab-{seed}-{index:05d}", things, canvas))
    return scenes


def render(scene: Scene, *, canvas: int | None = None) -> Image.Image:
    """The scene as an RGB image on white, without anti-aliasing (deterministic, exact colours), on
    its own canvas or scaled to ``canvas`` pixels a side."""
    side = scene.canvas if canvas is None else canvas
    _check_canvas(side)
    img = Image.new("RGB", (side, side), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for thing in scene.things:
        x, y = round(thing.x * side / scene.canvas), round(thing.y * side / scene.canvas)
        r = _radius(thing.size, side)
        fill = COLOURS[thing.colour]
        if thing.shape == "circle":
            draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
        elif thing.shape == "square":
            draw.rectangle((x - r, y - r, x + r, y + r), fill=fill)
        else:
            draw.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=fill)
    return img


def png_bytes(scene: Scene, *, canvas: int | None = None) -> bytes:
    """The scene as PNG bytes; the same scene always gives the same bytes (the lab finds a scene by
    the hash of the image the game serves)."""
    out = io.BytesIO()
    render(scene, canvas=canvas).save(out, format="PNG")
    return out.getvalue()


def _plural(shape: str) -> str:
    return f"{shape}s"


def _counting(scene: Scene) -> list[Question]:
    things = scene.things
    out = [Question("How many objects are there?", "counting", str(len(things)))]
    out += [
        Question(f"How many {_plural(s)} are there?", "counting", str(sum(t.shape == s for t in things)))
        for s in SHAPES
    ]
    out += [
        Question(f"How many {c} things are there?", "counting", str(sum(t.colour == c for t in things)))
        for c in COLOURS
    ]
    out += [
        Question(
            f"How many {c} {_plural(s)} are there?",
            "counting",
            str(sum(t.colour == c and t.shape == s for t in things)),
        )
        for c in COLOURS
        for s in SHAPES
    ]
    return out


def _colour(scene: Scene) -> list[Question]:
    by_shape = Counter(t.shape for t in scene.things)
    by_size_shape = Counter((t.size, t.shape) for t in scene.things)
    out = [
        Question(f"What colour is the {t.shape}?", "colour", t.colour)
        for t in scene.things
        if by_shape[t.shape] == 1
    ]
    out += [
        Question(f"What colour is the {t.size} {t.shape}?", "colour", t.colour)
        for t in scene.things
        if by_size_shape[(t.size, t.shape)] == 1
    ]
    return out


def _position(scene: Scene) -> list[Question]:
    """Pairs of things each named uniquely by colour and shape, asked about along an axis only where
    their extents along it do not overlap (so shapes in one grid column are never left or right of
    each other, and shapes in different columns always are)."""
    named = Counter((t.colour, t.shape) for t in scene.things)
    unique = [t for t in scene.things if named[(t.colour, t.shape)] == 1]
    out = []
    for first in unique:
        for second in unique:
            if first is second:
                continue
            a, b = f"the {first.colour} {first.shape}", f"the {second.colour} {second.shape}"
            apart = _radius(first.size, scene.canvas) + _radius(second.size, scene.canvas)
            if abs(first.x - second.x) > apart:
                side = "left" if first.x < second.x else "right"
                out.append(Question(f"Is {a} left or right of {b}?", "position", side))
            if abs(first.y - second.y) > apart:
                side = "above" if first.y < second.y else "below"
                out.append(Question(f"Is {a} above or below {b}?", "position", side))
    return out


def _existence(scene: Scene) -> list[Question]:
    present = {(t.colour, t.shape) for t in scene.things}
    return [
        Question(f"Is there a {c} {s}?", "existence", "yes" if (c, s) in present else "no")
        for c in COLOURS
        for s in SHAPES
    ]


_TEMPLATES = {"counting": _counting, "colour": _colour, "position": _position, "existence": _existence}


def questions(scene: Scene, qtype: str) -> list[Question]:
    """Every template instance of ``qtype`` that has one true answer in ``scene``, with that answer."""
    _check_type(qtype)
    return _TEMPLATES[qtype](scene)


def sample_question(
    scene: Scene, qtype: str, rng: random.Random, *, exclude: Collection[str] = ()
) -> Question:
    """A random question of ``qtype`` (none of the texts in ``exclude``): first a true answer uniformly
    among those the type's questions have in this scene, then a question with it, so always saying
    "no" or "1" is not a winning model."""
    candidates = [q for q in questions(scene, qtype) if q.text not in exclude]
    if not candidates:
        raise InputError(f"scene {scene.scene_id} has no {qtype} question")
    answers = sorted({q.answer for q in candidates})
    answer = rng.choice(answers)
    return rng.choice([q for q in candidates if q.answer == answer])


def _normalise_text(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


def parse(scene: Scene, text: str) -> Question | None:
    """The template question ``text`` is in ``scene`` (case, spacing and punctuation aside), with its
    type and true answer; None if it is not one of the scene's template questions."""
    wanted = _normalise_text(text)
    for qtype in QUESTION_TYPES:
        for question in questions(scene, qtype):
            if _normalise_text(question.text) == wanted:
                return question
    return None


def answer_words(qtype: str) -> tuple[str, ...]:
    """Every answer of ``qtype`` in its normal form."""
    _check_type(qtype)
    return _ANSWER_WORDS[qtype]


def normalise_answer(qtype: str, answer: str) -> str | None:
    """The first word of ``answer`` that is a valid answer of ``qtype`` ("Two." -> "2", "It is red"
    -> "red", "Yes, there is" -> "yes"); None if there is none."""
    _check_type(qtype)
    for word in _normalise_text(answer).split():
        word = _SYNONYMS.get(word, word)
        if word in _ANSWER_WORDS[qtype]:
            return word
    return None


def is_right(qtype: str, answer: str, truth: str) -> bool:
    """Whether ``answer`` gives the true answer ``truth``: the comparison players, oracle and judge share."""
    found = normalise_answer(qtype, answer)
    return found is not None and found == normalise_answer(qtype, truth)


def wrong_answer(question: Question, rng: random.Random) -> str:
    """A plausible wrong answer of the same type: a count one or two off, another colour, the
    opposite side, the other yes/no."""
    _check_type(question.qtype)
    if question.qtype == "counting":
        truth = int(question.answer)
        options = [str(truth + d) for d in (-2, -1, 1, 2) if 0 <= truth + d <= 9]
        return rng.choice(options)
    if question.qtype == "colour":
        return rng.choice([c for c in COLOURS if c != question.answer])
    return _OPPOSITE[question.answer]


def pool(scene: Scene) -> str:
    """The scene's pool name as the game spells it."""
    return "tainted" if scene.tainted else "untainted"


def write_images(scenes: Iterable[Scene], out_dir: Path, *, canvas: int | None = None) -> Path:
    """Write each scene as ``<scene_id>.png`` in ``out_dir`` and a ``manifest.jsonl`` for
    ``gap images import`` (path, pool, tags ``lab`` and ``scene:<id>``, scene_id, objects); returns
    the manifest's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "manifest.jsonl"
    with manifest.open("w", encoding="utf-8") as stream:
        for scene in scenes:
            name = f"{scene.scene_id}.png"
            (out_dir / name).write_bytes(png_bytes(scene, canvas=canvas))
            row = {
                "path": name,
                "pool": pool(scene),
                "tags": ["lab", f"scene:{scene.scene_id}"],
                "scene_id": scene.scene_id,
                "objects": len(scene.things),
            }
            stream.write(json.dumps(row) + "\n")
    return manifest
