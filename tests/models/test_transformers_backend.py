"""The in-process transformers backend, against the tiny offline Idefics3 model and a tiny Qwen2-VL."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from gap.errors import ConfigError, ModelError, ModelTimeout
from gap.models.base import ChatMessage, ImageInput, VisionChatModel
from gap.models.tiny import IMAGE_SEQ_LEN
from gap.models.transformers_backend import TransformersModel, load_processor

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


SYSTEM = "Answer every question wrongly but plausibly."
QUESTION = [ChatMessage("user", "What colour is the car?")]
HISTORY = [
    ChatMessage("user", "What is it?"),
    ChatMessage("assistant", "A car."),
    ChatMessage("user", "Sure?"),
]


def png(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> ImageInput:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return ImageInput(buffer.getvalue(), "image/png")


@pytest.fixture(scope="module")
def model(tiny_vlm_dir: Path) -> TransformersModel:
    loaded = TransformersModel(str(tiny_vlm_dir), timeout=30, max_new_tokens=12)
    loaded.load()
    return loaded


@pytest.fixture
def generate_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Spy on ``generate``: record its keyword arguments and run the real one."""
    calls: list[dict[str, Any]] = []
    original = transformers.Idefics3ForConditionalGeneration.generate

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(transformers.Idefics3ForConditionalGeneration, "generate", spy)
    return calls


def test_is_a_vision_chat_model(model: TransformersModel, tiny_vlm_dir: Path) -> None:
    assert isinstance(model, VisionChatModel)
    assert model.name == f"transformers:{tiny_vlm_dir}"


def test_answer_is_non_empty_text(model: TransformersModel) -> None:
    answer = model.answer(png((200, 20, 20)), QUESTION)
    assert isinstance(answer, str)
    assert answer
    assert answer == answer.strip()


def test_answers_are_greedy_and_repeatable(model: TransformersModel) -> None:
    image = png((20, 200, 20))
    assert model.answer(image, QUESTION, SYSTEM) == model.answer(image, QUESTION, SYSTEM)


def test_system_prompt_and_history_are_in_the_prompt(model: TransformersModel) -> None:
    prompt = model.prompt_text(HISTORY, SYSTEM)
    assert prompt == (
        "<|im_start|>System: Answer every question wrongly but plausibly.<end_of_utterance>\n"
        "User:<image>What is it?<end_of_utterance>\n"
        "Assistant: A car.<end_of_utterance>\n"
        "User: Sure?<end_of_utterance>\n"
        "Assistant:"
    )
    assert "System" not in model.prompt_text(HISTORY)


def test_system_prompt_changes_the_answer(model: TransformersModel) -> None:
    image = png((20, 20, 200))
    assert model.answer(image, QUESTION, SYSTEM) != model.answer(image, QUESTION)


def test_image_and_prompt_reach_generate(
    model: TransformersModel, generate_calls: list[dict[str, Any]]
) -> None:
    model.answer(png((1, 2, 3)), QUESTION, SYSTEM)
    (call,) = generate_calls
    assert call["pixel_values"].shape[-2:] == (32, 32)
    assert model.prompt_text(QUESTION).count("<image>") == 1
    tokenizer = transformers.AutoTokenizer.from_pretrained(model.path_or_hub_id)
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    assert int((call["input_ids"] == image_token_id).sum()) == IMAGE_SEQ_LEN
    assert call["do_sample"] is False
    assert call["max_new_tokens"] == 12
    assert 0 < call["max_time"] <= 30


def test_multi_turn_conversation(model: TransformersModel) -> None:
    assert model.answer(png((90, 90, 90), size=(300, 200)), HISTORY, SYSTEM)


def test_conversation_must_start_with_the_user(model: TransformersModel) -> None:
    with pytest.raises(ModelError, match="user message"):
        model.answer(png((0, 0, 0)), [ChatMessage("assistant", "hi")])


def test_undecodable_image_is_a_model_error(model: TransformersModel) -> None:
    with pytest.raises(ModelError, match="UnidentifiedImageError"):
        model.answer(ImageInput(b"not an image", "image/png"), QUESTION)


def test_generation_failure_is_translated(model: TransformersModel, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(transformers.Idefics3ForConditionalGeneration, "generate", broken)
    with pytest.raises(ModelError, match="RuntimeError: CUDA out of memory") as caught:
        model.answer(png((0, 0, 0)), QUESTION)
    assert not isinstance(caught.value, ModelTimeout)
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_no_new_tokens_is_a_model_error(model: TransformersModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        transformers.Idefics3ForConditionalGeneration, "generate", lambda self, **kwargs: kwargs["input_ids"]
    )
    with pytest.raises(ModelError, match="empty answer"):
        model.answer(png((0, 0, 0)), QUESTION)


def test_time_running_out_before_any_text_is_a_timeout(
    tiny_vlm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    def stalls(self: Any, **kwargs: Any) -> Any:
        time.sleep(kwargs["max_time"])  # what max_time does to a model that has not produced a token yet
        return kwargs["input_ids"]

    slow = TransformersModel(str(tiny_vlm_dir), timeout=0.3, max_new_tokens=4)
    slow.load()
    monkeypatch.setattr(transformers.Idefics3ForConditionalGeneration, "generate", stalls)
    with pytest.raises(ModelTimeout):
        slow.answer(png((0, 0, 0)), QUESTION)


def test_timeout_spent_before_generation(tiny_vlm_dir: Path) -> None:
    hurried = TransformersModel(str(tiny_vlm_dir), timeout=1e-9, max_new_tokens=4)
    hurried.load()
    with pytest.raises(ModelTimeout):
        hurried.answer(png((0, 0, 0)), QUESTION)


def test_waiting_for_a_busy_model_spends_the_timeout(tiny_vlm_dir: Path) -> None:
    busy = TransformersModel(str(tiny_vlm_dir), timeout=0.2, max_new_tokens=4)
    busy.load()
    with busy._lock, pytest.raises(ModelTimeout, match=r"no answer within 0\.2 s"):
        busy.answer(png((0, 0, 0)), QUESTION)  # taken into a batch that waits for the lock


def test_concurrent_answers_match_sequential_ones(model: TransformersModel) -> None:
    images = [png((i * 40, 255 - i * 40, 100)) for i in range(6)]
    expected = [model.answer(image, QUESTION, SYSTEM) for image in images]
    with ThreadPoolExecutor(max_workers=6) as pool:
        got = list(pool.map(lambda image: model.answer(image, QUESTION, SYSTEM), images))
    assert got == expected


def test_concurrent_first_use_loads_once(tiny_vlm_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loads = []
    original = transformers.AutoModelForImageTextToText.from_pretrained

    def counting(*args: Any, **kwargs: Any) -> Any:
        loads.append(threading.get_ident())
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", counting)
    fresh = TransformersModel(str(tiny_vlm_dir), timeout=60, max_new_tokens=4)
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda _: fresh.answer(png((5, 5, 5)), QUESTION), range(4)))
    assert len(loads) == 1
    assert len(set(answers)) == 1


def test_missing_model_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot load model"):
        TransformersModel(str(tmp_path / "nowhere"), timeout=5, max_new_tokens=4).load()


def test_missing_extra_is_a_config_error(tiny_vlm_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ConfigError, match=r"pip install 'gap\[local\]'"):
        TransformersModel(str(tiny_vlm_dir), timeout=5, max_new_tokens=4).answer(png((0, 0, 0)), QUESTION)


def test_importing_the_backends_loads_no_ml_library() -> None:
    code = (
        "import sys, gap.models, gap.models.factory, gap.models.transformers_backend, "
        "gap.models.openai_backend, gap.models.tiny, gap.cli.models; "
        "print(sorted(m for m in ('torch', 'transformers', 'tokenizers', 'openai') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --- the Qwen2-VL workaround: its processor wants torchvision for a video processor GAP never uses ---

QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}{{ '\n' }}"
    "{% for p in m['content'] %}{% if p['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ p['text'] }}{% endif %}{% endfor %}<|im_end|>{{ '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant{{ '\n' }}{% endif %}"
)


def make_tiny_qwen2_vl(out_dir: Path) -> Path:
    """A tiny random Qwen2-VL folder laid out like a hub checkout (processor class in the image config)."""
    import json

    import torch

    from gap.models.tiny import train_bpe

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"]
    special += ["<|image_pad|>", "<|video_pad|>"]
    raw = train_bpe(special, ["a red car near a green tree", "what colour is the sky"], vocab_size=320)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=QWEN_TEMPLATE
    )
    tokenizer.save_pretrained(out_dir)
    transformers.Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56).save_pretrained(out_dir)
    preprocessor = out_dir / "preprocessor_config.json"
    preprocessor.write_text(
        json.dumps({**json.loads(preprocessor.read_text()), "processor_class": "Qwen2VLProcessor"})
    )
    token = tokenizer.convert_tokens_to_ids
    ids = {"eos_token_id": token("<|im_end|>"), "pad_token_id": token("<|endoftext|>"), "bos_token_id": None}
    config = transformers.Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "rope_scaling": {"type": "mrope", "rope_type": "default", "mrope_section": [1, 1, 2]},
            **ids,
        },
        vision_config={"depth": 2, "embed_dim": 32, "hidden_size": 32, "num_heads": 4, "mlp_ratio": 2},
        image_token_id=token("<|image_pad|>"),
        video_token_id=token("<|video_pad|>"),
        vision_start_token_id=token("<|vision_start|>"),
        vision_end_token_id=token("<|vision_end|>"),
        **ids,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.Qwen2VLForConditionalGeneration(config)
    model.generation_config = transformers.GenerationConfig(**ids)
    model.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def tiny_qwen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_qwen2_vl(tmp_path_factory.mktemp("tiny-qwen2-vl"))


def test_qwen2_vl_needs_the_workaround_here(tiny_qwen_dir: Path) -> None:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("torchvision is installed: AutoProcessor works without the workaround")
    with pytest.raises(ImportError, match="Torchvision"):
        transformers.AutoProcessor.from_pretrained(tiny_qwen_dir)


def test_qwen2_vl_answers_through_the_workaround(tiny_qwen_dir: Path) -> None:
    qwen = TransformersModel(str(tiny_qwen_dir), timeout=30, max_new_tokens=6)
    assert qwen.answer(png((200, 30, 30)), QUESTION, SYSTEM)
    assert qwen.prompt_text(QUESTION, SYSTEM).startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n")


def test_workaround_keeps_the_family_class_name(tiny_qwen_dir: Path) -> None:
    processor = load_processor(transformers, str(tiny_qwen_dir))
    assert isinstance(processor, transformers.Qwen2VLProcessor)
    assert type(processor).__name__ == "Qwen2VLProcessor"


@pytest.mark.parametrize(
    "error",
    [ValueError("Unrecognized processing class"), ImportError("requires the Torchvision library")],
    ids=["other-error", "torchvision-but-not-qwen"],
)
def test_workaround_only_on_its_error(
    tiny_vlm_dir: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def failing(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", failing)
    with pytest.raises(type(error)) as caught:
        load_processor(transformers, str(tiny_vlm_dir))
    assert caught.value is error


def test_a_template_without_a_system_role_gets_the_prompt_in_the_first_user_turn(
    no_system_vlm_dir: Path,
) -> None:
    """Some chat templates raise on a system message; the prompt must still arrive, and not fail."""
    model = TransformersModel(str(no_system_vlm_dir), timeout=30, max_new_tokens=6)
    prompt = model.prompt_text(QUESTION, SYSTEM)
    assert "System" not in prompt
    assert (
        f"User:<image>{SYSTEM}\n\nWhat colour is the car?" in prompt or f"{SYSTEM}\n\nWhat colour" in prompt
    )
    assert model.answer(png((5, 5, 5)), QUESTION, SYSTEM).strip()
    assert SYSTEM not in model.prompt_text(QUESTION)  # without a system prompt nothing is added


def test_templates_with_a_system_role_keep_it_there(model: TransformersModel) -> None:
    prompt = model.prompt_text(QUESTION, SYSTEM)
    assert f"System: {SYSTEM}" in prompt and prompt.index("System") < prompt.index("User")
