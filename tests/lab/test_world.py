"""The lab world: its truth agrees with its pixels, it is repeatable, and its questions are sound."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from gap.errors import InputError
from gap.lab import world
from gap.lab.world import COLOURS, QUESTION_TYPES, Question, Scene, Thing

SCENES = world.draw_scenes(120, seed=7)


def blobs(scene: Scene) -> list[Thing]:
    """The things read back from the rendered pixels alone: one connected component per shape, its
    colour from its exact RGB, its shape from how much of its bounding box it fills, its size from
    its width and its centre from its bounding box."""
    pixels = np.asarray(world.render(scene))
    found = []
    for name, rgb in COLOURS.items():
        labels, count = ndimage.label((pixels == rgb).all(axis=2))
        for box in ndimage.find_objects(labels)[:count]:
            width = box[1].stop - box[1].start
            fill = (labels[box] > 0).mean()
            shape = "square" if fill > 0.95 else "circle" if fill > 0.65 else "triangle"
            size = "large" if width > 2 * world.SIZES["small"] * scene.canvas + 2 else "small"
            x, y = (box[1].start + box[1].stop - 1) // 2, (box[0].start + box[0].stop - 1) // 2
            found.append(Thing(shape, name, size, x, y))
    return found


def test_the_truth_agrees_with_the_drawn_pixels() -> None:
    for scene in SCENES:
        seen = blobs(scene)
        assert sorted((t.shape, t.colour, t.size) for t in seen) == sorted(
            (t.shape, t.colour, t.size) for t in scene.things
        ), scene
        for thing in scene.things:
            (match,) = [
                t
                for t in seen
                if (t.shape, t.colour, t.size) == (thing.shape, thing.colour, thing.size)
                and abs(t.x - thing.x) <= 1
                and abs(t.y - thing.y) <= 1
            ]
            assert match


def test_answers_agree_with_what_the_pixels_show() -> None:
    """Counting, colour, position and existence answers recomputed from the pixels' blobs."""
    checked = Counter[str]()
    for scene in SCENES:
        seen = Scene(scene.scene_id, tuple(blobs(scene)), scene.canvas)
        for qtype in QUESTION_TYPES:
            for question in world.questions(scene, qtype):
                again = world.parse(seen, question.text)
                assert again is not None and again.answer == question.answer, (scene, question)
                checked[qtype] += 1
    assert all(checked[qtype] > 50 for qtype in QUESTION_TYPES), checked


def test_counts_are_what_a_count_of_the_pixels_says() -> None:
    for scene in SCENES[:40]:
        pixels = np.asarray(world.render(scene))
        reds = ndimage.label((pixels == COLOURS["red"]).all(axis=2))[1]
        (question,) = [
            q for q in world.questions(scene, "counting") if q.text == "How many red things are there?"
        ]
        assert question.answer == str(reds)
        ink = ndimage.label((pixels != world.BACKGROUND).any(axis=2))[1]
        assert world.questions(scene, "counting")[0].answer == str(ink) == str(len(scene.things))


def test_scenes_are_deterministic_by_seed_and_differ_across_seeds() -> None:
    again = world.draw_scenes(120, seed=7)
    assert again == SCENES
    assert [world.png_bytes(s) for s in again[:10]] == [world.png_bytes(s) for s in SCENES[:10]]
    assert world.draw_scenes(10, seed=7) == SCENES[:10]
    other = world.draw_scenes(120, seed=8)
    assert sum(a.things == b.things for a, b in zip(SCENES, other, strict=True)) < 5
    assert len({s.scene_id for s in SCENES + other}) == 240
    assert len({world.png_bytes(s) for s in SCENES}) == len(SCENES)


def test_pools_split_by_the_fewer_than_four_objects_rule() -> None:
    tainted = [s for s in SCENES if s.tainted]
    untainted = [s for s in SCENES if not s.tainted]
    assert len(tainted) == len(untainted) == 60
    assert {len(s.things) for s in tainted} == {1, 2, 3}
    assert {len(s.things) for s in untainted} == {4, 5, 6}
    assert all(world.pool(s) == ("tainted" if len(s.things) < 4 else "untainted") for s in SCENES)


def test_every_question_parses_back_to_itself_with_its_answer() -> None:
    for scene in SCENES:
        for qtype in QUESTION_TYPES:
            texts = [q.text for q in world.questions(scene, qtype)]
            assert len(texts) == len(set(texts))
            for question in world.questions(scene, qtype):
                assert world.parse(scene, question.text) == question
                assert world.parse(scene, "  " + question.text.upper().rstrip("?") + " ") == question
    assert world.parse(SCENES[0], "What is the meaning of life?") is None


def test_a_question_without_one_true_answer_is_not_asked() -> None:
    two_squares = Scene("x", (Thing("square", "red", "small", 9, 9), Thing("square", "blue", "large", 46, 9)))
    colour = {q.text: q.answer for q in world.questions(two_squares, "colour")}
    assert "What colour is the square?" not in colour
    assert colour == {"What colour is the small square?": "red", "What colour is the large square?": "blue"}
    assert world.parse(two_squares, "What colour is the square?") is None
    position = {q.text: q.answer for q in world.questions(two_squares, "position")}
    assert position == {
        "Is the red square left or right of the blue square?": "left",
        "Is the blue square left or right of the red square?": "right",
    }


def test_sample_question_is_seeded_and_balances_answers() -> None:
    scene = SCENES[1]
    first = [world.sample_question(scene, "existence", random.Random(3)) for _ in range(3)]
    assert len(set(first)) == 1
    rng = random.Random(4)
    answers = Counter(world.sample_question(scene, "existence", rng).answer for _ in range(400))
    assert 150 < answers["yes"] < 250
    lonely = Scene("one", (Thing("circle", "red", "small", 9, 9),))
    with pytest.raises(InputError, match="no position question"):
        world.sample_question(lonely, "position", rng)


def test_is_right_normalises_answers() -> None:
    assert world.is_right("counting", "There are two.", "2")
    assert world.is_right("counting", "3", "3") and not world.is_right("counting", "4", "3")
    assert world.is_right("colour", "It is red.", "red") and not world.is_right("colour", "blue", "red")
    assert world.is_right("position", "To the left.", "left")
    assert world.is_right("position", "on top", "above")
    assert world.is_right("existence", "Yes, there is.", "yes")
    assert not world.is_right("existence", "No", "yes")
    assert not world.is_right("colour", "I cannot tell", "red")
    with pytest.raises(InputError, match="unknown question type"):
        world.is_right("size", "big", "big")


def test_wrong_answer_is_never_right() -> None:
    rng = random.Random(0)
    seen = Counter[str]()
    for scene in SCENES:
        for qtype in QUESTION_TYPES:
            for question in world.questions(scene, qtype):
                wrong = world.wrong_answer(question, rng)
                assert not world.is_right(qtype, wrong, question.answer), (question, wrong)
                assert world.normalise_answer(qtype, wrong) == wrong
                seen[qtype] += 1
    assert set(seen) == set(QUESTION_TYPES)
    assert world.wrong_answer(Question("How many cats?", "counting", "0"), rng) in {"1", "2"}


def test_write_images_makes_a_manifest_for_gap_images_import(tmp_path: Path) -> None:
    from gap.services.image_import import read_manifest

    manifest = world.write_images(SCENES[:6], tmp_path / "images")
    rows = list(read_manifest(manifest))
    for row, scene in zip(rows, SCENES[:6], strict=True):
        assert not isinstance(row, InputError)
        assert row.pool.value == world.pool(scene)
        assert row.meta["scene_id"] == scene.scene_id and f"scene:{scene.scene_id}" in row.meta["tags"]  # type: ignore[operator]
        data = (manifest.parent / row.source).read_bytes()
        assert data == world.png_bytes(scene)
        with Image.open(manifest.parent / row.source) as img:
            assert img.size == (world.CANVAS, world.CANVAS) and img.mode == "RGB"
    assert json.loads(manifest.read_text().splitlines()[0])["objects"] == len(SCENES[0].things)


def test_bad_input_gets_a_clear_error() -> None:
    with pytest.raises(InputError, match="multiple of 28"):
        world.draw_scenes(1, 0, canvas=50)
    with pytest.raises(InputError, match="unknown question type"):
        world.questions(SCENES[0], "size")
