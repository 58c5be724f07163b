"""Model specs: which backend a spec builds, with which settings, and which specs are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

import gap.models
from gap.config import Settings
from gap.errors import ConfigError
from gap.models import load_model
from gap.models.openai_backend import OpenAIModel
from gap.models.transformers_backend import TransformersModel


@pytest.fixture
def settings() -> Settings:
    return Settings(
        openai_base_url="http://10.0.0.7:8000/v1",
        openai_api_key="sk-secret",
        model_timeout=12.5,
        max_new_tokens=77,
    )


def test_transformers_spec(settings: Settings) -> None:
    model = load_model("transformers:HuggingFaceTB/SmolVLM-256M-Instruct", settings)
    assert isinstance(model, TransformersModel)
    assert model.path_or_hub_id == "HuggingFaceTB/SmolVLM-256M-Instruct"
    assert (model.timeout, model.max_new_tokens) == (12.5, 77)
    assert model.name == "transformers:HuggingFaceTB/SmolVLM-256M-Instruct"


def test_transformers_spec_with_a_colon_in_the_path(settings: Settings) -> None:
    model = load_model("transformers:/models/run:3", settings)
    assert isinstance(model, TransformersModel)
    assert model.path_or_hub_id == "/models/run:3"


def test_openai_spec(settings: Settings) -> None:
    model = load_model("openai:Qwen/Qwen2.5-VL-7B-Instruct", settings)
    assert isinstance(model, OpenAIModel)
    assert model.model == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert model.base_url == "http://10.0.0.7:8000/v1"
    assert model.api_key == "sk-secret"
    assert (model.timeout, model.max_new_tokens) == (12.5, 77)
    assert model.name == "openai:Qwen/Qwen2.5-VL-7B-Instruct"


def test_bare_folder_means_transformers(settings: Settings, tmp_path: Path) -> None:
    model = load_model(str(tmp_path), settings)
    assert isinstance(model, TransformersModel)
    assert model.path_or_hub_id == str(tmp_path)


def test_building_loads_nothing(settings: Settings, tmp_path: Path) -> None:
    """A spec naming a folder with no model in it builds fine: weights load on first use."""
    assert load_model(f"transformers:{tmp_path / 'not-yet'}", settings).name.endswith("not-yet")


def test_default_setting_is_a_valid_spec() -> None:
    assert isinstance(load_model(Settings().model, Settings()), TransformersModel)


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "   ",
        "SmolVLM",
        "openai:",
        "transformers:",
        "transformers:  ",
        "vllm:some-model",
        "/no/such/folder",
    ],
)
def test_bad_specs_are_config_errors(settings: Settings, spec: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_model(spec, settings)
    assert repr(spec) in caught.value.message
    assert "transformers:<folder or hub id>" in caught.value.message
    assert "openai:<model name>" in caught.value.message


def test_public_surface() -> None:
    assert gap.models.__all__ == sorted(gap.models.__all__)
    assert set(gap.models.__all__) == {"ChatMessage", "ImageInput", "VisionChatModel", "load_model"}
    for name in gap.models.__all__:
        assert getattr(gap.models, name) is not None
