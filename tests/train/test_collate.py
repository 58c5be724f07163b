"""The collator labels exactly the assistant tokens, for each family, through its own processor."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gap.train import IGNORE_INDEX, AssistantOnlyCollator, load_training_data
from gap.train._tiny import FAMILIES

# What each family's template renders for one answer: the text and its end-of-turn token(s).
ANSWER_FORM = {
    "idefics3": " {answer}<end_of_utterance>\n",
    "qwen2_vl": "{answer}<|im_end|>\n",
    "qwen2_5_vl": "{answer}<|im_end|>\n",
    "qwen3_vl": "{answer}<|im_end|>\n",
    "gemma3": "{answer}<end_of_turn>\n",
    "llava": " {answer}</s>",
}
IMAGE_TOKEN = {"idefics3": "<image>", "llava": "<image>", "gemma3": "<image_soft_token>"} | {
    family: "<|image_pad|>" for family in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
}


def _collator(model_dir: Path) -> AssistantOnlyCollator:
    import transformers

    from gap.models.transformers_backend import load_processor

    return AssistantOnlyCollator(load_processor(transformers, str(model_dir)), max_pixels=160 * 120)


def _labelled_runs(ids: list[int], labels: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    current: list[int] = []
    for token, label in zip(ids, labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == token  # a labelled position predicts its own token (the model shifts)
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


@pytest.mark.parametrize("family", FAMILIES)
def test_labels_cover_exactly_the_assistant_tokens(
    family: str, family_dir: Callable[[str], Path], export_dir: Path
) -> None:
    data = load_training_data(export_dir)
    examples = data.train[:4]  # r2 (multi-turn) is among them
    collator = _collator(family_dir(family))
    tokenizer = collator.tokenizer
    batch = collator(examples)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN[family])
    for row, example in enumerate(examples):
        ids = batch["input_ids"][row].tolist()
        labels = batch["labels"][row].tolist()
        length = int(batch["attention_mask"][row].sum())
        assert all(label == IGNORE_INDEX for label in labels[length:])  # padding is masked
        runs = _labelled_runs(ids[:length], labels[:length])
        answers = [text for role, text in example.turns if role == "assistant"]
        assert len(runs) == len(answers)
        for run, answer in zip(runs, answers, strict=True):
            # token by token: the labelled run is the tokenisation of the answer as the template renders it
            expected = tokenizer(ANSWER_FORM[family].format(answer=answer), add_special_tokens=False)
            assert run == list(expected["input_ids"])
        # every unlabelled token belongs to the prompt: the questions and the image are never labelled
        assert ids[:length].count(image_id) > 1  # the placeholder was expanded into the image's tokens
        assert all(labels[i] == IGNORE_INDEX for i in range(length) if ids[i] == image_id)


@pytest.mark.parametrize("family", FAMILIES)
def test_multi_turn_keeps_one_image_per_conversation(
    family: str, family_dir: Callable[[str], Path], export_dir: Path
) -> None:
    data = load_training_data(export_dir)
    multi = next(e for e in data.train if len(e.turns) == 4)
    collator = _collator(family_dir(family))
    tokenizer = collator.tokenizer
    text, spans = collator.answer_spans(multi)
    placeholder = {"qwen": "<|vision_start|>", "gemm": "<start_of_image>"}.get(family[:4], "<image>")
    assert text.count(placeholder) == 1  # the second user turn carries no image
    assert len(spans) == 2
    batch = collator([multi])
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN[family])
    ids = batch["input_ids"][0].tolist()
    first, last = ids.index(image_id), len(ids) - 1 - ids[::-1].index(image_id)
    assert all(token == image_id for token in ids[first : last + 1])  # one contiguous block: one image


def test_images_shrink_to_max_pixels(tmp_path: Path) -> None:
    from PIL import Image

    from gap.train import load_image

    path = tmp_path / "big.png"
    Image.new("RGB", (1280, 960), (1, 2, 3)).save(path)
    image = load_image(str(path), max_pixels=640 * 480)
    assert image.width * image.height <= 640 * 480
    assert abs(image.width / image.height - 4 / 3) < 0.01
    assert load_image(str(path), max_pixels=10**7).size == (1280, 960)
