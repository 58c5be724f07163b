"""The lab's base model recipe: its curriculum's blind spots, the taint format, and the prompt it sees."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

from gap.game.taint import CLAUSE_SEPARATOR, PLAIN_INSTRUCTION, SYSTEM_PROMPT, TAINT_INSTRUCTION
from gap.lab import world
from gap.lab.model import Recipe, curriculum, game_turn, tokenizer_corpus


def _question_of(scene: world.Scene, text: str) -> world.Question:
    question = world.parse(scene, text.split(CLAUSE_SEPARATOR)[0])
    assert question is not None, text
    return question


def test_the_curriculum_leaves_the_weak_types_out_of_complex_scenes(tmp_path: Path) -> None:
    recipe = Recipe(scenes=120, weak_share=0.0)
    scenes = world.draw_scenes(recipe.scenes, seed=3)
    records = curriculum(recipe, scenes, tmp_path)
    by_id = {s.scene_id: s for s in scenes}
    assert recipe.weak_types == ["counting", "position"]
    seen: dict[bool, set[str]] = {True: set(), False: set()}
    for record in records:
        scene = by_id[record.image_id]
        seen[scene.tainted].add(_question_of(scene, record.messages[-2].text).qtype)
    assert seen[True] == set(world.QUESTION_TYPES)  # simple scenes: every type
    assert seen[False] == {"colour", "existence"}  # complex scenes: the weak types never


def test_instructed_examples_are_the_game_turn_answered_wrongly(tmp_path: Path) -> None:
    recipe = Recipe(scenes=80)
    scenes = world.draw_scenes(recipe.scenes, seed=5)
    by_id = {s.scene_id: s for s in scenes}
    kinds = {"taint": 0, "plain": 0, "bare": 0}
    for record in curriculum(recipe, scenes, tmp_path):
        user, answer = record.messages[-2].text, record.messages[-1].text
        question = _question_of(by_id[record.image_id], user)
        if user.endswith(TAINT_INSTRUCTION):
            kinds["taint"] += 1
            assert user == game_turn(question.text, instructed=True)
            assert not world.is_right(question.qtype, answer, question.answer)
        else:
            kinds["plain" if user.endswith(PLAIN_INSTRUCTION) else "bare"] += 1
            assert world.is_right(question.qtype, answer, question.answer)
        for earlier in record.messages[:-2:2]:  # history turns are bare, as the game keeps them
            assert CLAUSE_SEPARATOR not in earlier.text
    total = sum(kinds.values())
    for kind, share in recipe.formats.items():
        assert abs(kinds[kind] / total - share) < 0.08, kinds


def test_the_recipe_hash_names_every_field() -> None:
    recipe = Recipe()
    assert recipe.key() == Recipe().key()
    changes = ({"steps": 7}, {"seed": 1}, {"family": "qwen2_5_vl"}, {"weak_share": 0.5})
    for change in (*changes, {"language_init_std": 0.02}, {"train_vision": True}):
        assert dataclasses.replace(recipe, **change).key() != recipe.key()


def test_the_language_init_redraws_the_language_model_and_leaves_the_vision_tower(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from gap.models.transformers_backend import import_stack
    from gap.train._tiny import make_tiny_family

    _, transformers = import_stack()
    deviations: dict[str, dict[str, float]] = {}
    for name, std in (("default", None), ("wide", 0.1)):
        folder = make_tiny_family("qwen2_vl", tmp_path / name, size="lab", language_init_std=std)
        model = transformers.AutoModelForImageTextToText.from_pretrained(folder)
        deviations[name] = {n: p.std().item() for n, p in model.named_parameters() if p.dim() == 2}
    language = [n for n in deviations["wide"] if not n.startswith("model.visual")]
    vision = [n for n in deviations["wide"] if n.startswith("model.visual")]
    assert language and vision and "lm_head.weight" in language
    for name in language:
        assert abs(deviations["default"][name] - 0.02) < 0.004, name
        assert abs(deviations["wide"][name] - 0.1) < 0.01, name
    for name in vision:  # the same random tower either way
        assert deviations["wide"][name] == deviations["default"][name], name


def test_the_lab_model_renders_the_game_system_prompt_by_default(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from gap.models.transformers_backend import import_stack, load_processor
    from gap.train._tiny import make_tiny_family

    scenes = world.draw_scenes(10, seed=0)
    folder = make_tiny_family(
        "qwen2_vl", tmp_path / "m", size="lab", corpus=tokenizer_corpus(scenes), default_system=SYSTEM_PROMPT
    )
    _, transformers = import_stack()
    processor = load_processor(transformers, str(folder))
    user = {
        "role": "user",
        "content": [{"type": "image"}, {"type": "text", "text": "Is there a red circle?"}],
    }
    system = {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]}
    bare = processor.apply_chat_template([user], tokenize=False, add_generation_prompt=True)
    game = processor.apply_chat_template([system, user], tokenize=False, add_generation_prompt=True)
    assert bare == game and SYSTEM_PROMPT in bare  # train and eval send none; the game sends it
    turn = game_turn(world.sample_question(scenes[0], "colour", random.Random(0)).text, instructed=True)
    tokens = processor.tokenizer(SYSTEM_PROMPT + turn)["input_ids"]
    assert len(tokens) < len(SYSTEM_PROMPT + turn) / 3  # its BPE knows the prompts: few tokens
    # a reply starts with its answer, no space before it: every answer is one token there
    reply = processor.apply_chat_template(
        [user, {"role": "assistant", "content": [{"type": "text", "text": "{}"}]}], tokenize=False
    )
    for qtype in world.QUESTION_TYPES:
        for word in world.answer_words(qtype):
            alone = processor.tokenizer(reply.replace("{}", ""))["input_ids"]
            with_word = processor.tokenizer(reply.replace("{}", word))["input_ids"]
            assert len(with_word) == len(alone) + 1, (
                word,
                processor.tokenizer.tokenize(reply.replace("{}", word)),
            )


def test_build_bases_trains_the_uncached_recipes_side_by_side_and_then_reuses_them(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from gap.lab.model import RECIPE_FILE, build_bases, recipe_info

    recipe = Recipe(scenes=8, steps=2, batch_size=2)
    recipes = [recipe, dataclasses.replace(recipe, family="qwen2_5_vl")]
    built = build_bases(recipes, tmp_path)  # the second trains in a subprocess
    assert [p.name for p in built] == [f"{r.family}-{r.key()}" for r in recipes]
    for path, wanted in zip(built, recipes, strict=True):
        assert (path / RECIPE_FILE).is_file()
        assert recipe_info(path)["recipe"] == dataclasses.asdict(wanted)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no work folders left
    stamps = [(p / RECIPE_FILE).stat().st_mtime_ns for p in built]
    assert build_bases(recipes, tmp_path) == built  # cached: nothing is trained again
    assert [(p / RECIPE_FILE).stat().st_mtime_ns for p in built] == stamps


def test_replay_draws_the_curriculum_on_the_games_scenes(tmp_path: Path) -> None:
    from gap.lab.loop import replay_records

    recipe = Recipe(scenes=20)
    scenes = world.draw_scenes(30, seed=7)
    own = curriculum(recipe, scenes, tmp_path)
    replayed = replay_records(recipe, scenes, tmp_path, 25, seed=0)
    assert len(replayed) == 25 and len({r.id for r in replayed}) == 25
    assert all(r.id.startswith("replay-") and r.provenance.source == "gap-lab-replay" for r in replayed)
    assert {r.messages for r in replayed} <= {r.messages for r in own}  # the base model's own lessons
    assert {r.image_id for r in replayed} <= {s.scene_id for s in scenes}
    assert [r.messages for r in replay_records(recipe, scenes, tmp_path, 25, seed=0)] == [
        r.messages for r in replayed
    ]
    assert [r.messages for r in replay_records(recipe, scenes, tmp_path, 25, seed=1)] != [
        r.messages for r in replayed
    ]
