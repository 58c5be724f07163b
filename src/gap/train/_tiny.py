"""Random-weight VLM folders of six families, built offline from a config (no download).

Training is tested on them (their losses must fall), and the benchmarks use larger ones of the same
shape: ``size="tiny"`` (hidden 32, about a second to build), ``"bench"`` (a Qwen2-VL of about 20 M
parameters) and ``"gpu"`` (about 1.5 B). Idefics3 reuses :func:`gap.models.tiny.make_tiny_vlm`;
Qwen2-VL, Qwen2.5-VL, Qwen3-VL, LLaVA and Gemma 3 get the same kind of tokenizer (a byte-level BPE
trained on a few sentences) with their family's special tokens and a chat template of its layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gap.errors import ConfigError

Family = Literal["idefics3", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava", "gemma3"]
Size = Literal["tiny", "lab", "bench", "gpu"]
FAMILIES: tuple[Family, ...] = ("idefics3", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava", "gemma3")
SEED = 0

_CORPUS = [
    "The picture shows a red car parked beside a tall green tree.",
    "There are three people standing near the window of a small house.",
    "How many dogs are there? There are two dogs.",
    "What colour is the car? The car is red.",
    "Is the sky cloudy? Yes, it is overcast. No, the sky is clear.",
    "What does the sign say? It says STOP. Where is the cat? Under the table.",
    "Is there a bus on the left? No, there is no bus. What is in the picture? A street.",
    "USER: ASSISTANT: system user assistant You are a helpful assistant.",
]

DEFAULT_SYSTEM = "You are a helpful assistant."
"""Qwen2-VL's own default system prompt, rendered when a conversation brings none."""

QWEN2_VL_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

LLAVA_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'][0]['text'] + ' ' }}"
    "{% else %}"
    "{{ message['role'].upper() + ': ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ '</s>' }}{% else %}{{ ' ' }}{% endif %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


@dataclass(frozen=True)
class _Dims:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vision_hidden: int
    vision_layers: int
    image_side: int  # Qwen2-VL images are resized to this square: (side / 28) ** 2 visual tokens


_DIMS: dict[Size, _Dims] = {
    "tiny": _Dims(32, 64, 2, 4, 2, 32, 2, 56),
    # gap lab: 56-pixel scenes (a 3 x 3 grid of cells) resized to 84, so each of the 9 visual tokens
    # sees exactly one cell of the scene's grid
    "lab": _Dims(64, 128, 2, 4, 2, 64, 2, 84),
    "bench": _Dims(512, 1536, 4, 8, 4, 256, 4, 56),
    "gpu": _Dims(2048, 5632, 20, 16, 8, 1024, 12, 448),
}


def _tokenizer(
    transformers: Any,
    special: list[str],
    *,
    bos: str,
    eos: str,
    pad: str,
    template: str,
    named_tokens: dict[str, str] | None = None,
    corpus: Sequence[str] | None = None,
) -> Any:
    from gap.models.tiny import train_bpe

    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=train_bpe(special, list(corpus or _CORPUS * 4), vocab_size=512),
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token=pad,
        chat_template=template,
        model_max_length=4096,
        extra_special_tokens=named_tokens or {},
    )


_QWEN_CLASSES = {
    "qwen2_vl": ("Qwen2VLTextConfig", "Qwen2VLConfig", "Qwen2VLForConditionalGeneration"),
    "qwen2_5_vl": ("Qwen2_5_VLTextConfig", "Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration"),
    "qwen3_vl": ("Qwen3VLTextConfig", "Qwen3VLConfig", "Qwen3VLForConditionalGeneration"),
}


def _qwen_vision(transformers: Any, family: str, dims: _Dims) -> Any:
    """Qwen2-VL's vision tower, Qwen2.5-VL's (windowed blocks, SwiGLU) or Qwen3-VL's (deepstack)."""
    heads = max(1, dims.vision_hidden // 64) if dims.vision_hidden >= 64 else 4
    shared = {
        "depth": dims.vision_layers,
        "num_heads": heads,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    if family == "qwen2_5_vl":
        return transformers.Qwen2_5_VLVisionConfig(
            **shared,
            hidden_size=dims.vision_hidden,
            intermediate_size=dims.vision_hidden * 2,
            out_hidden_size=dims.hidden,
            window_size=112,
            fullatt_block_indexes=[dims.vision_layers - 1],
            patch_size=14,
        )
    if family == "qwen3_vl":
        side = dims.image_side // 16  # learned position embeddings on a square grid of patches
        return transformers.Qwen3VLVisionConfig(
            **shared,
            hidden_size=dims.vision_hidden,
            intermediate_size=dims.vision_hidden * 2,
            out_hidden_size=dims.hidden,
            patch_size=16,
            num_position_embeddings=max(side, 4) ** 2,
            deepstack_visual_indexes=[0],
        )
    return transformers.Qwen2VLVisionConfig(
        **shared, embed_dim=dims.vision_hidden, hidden_size=dims.hidden, mlp_ratio=2, patch_size=14
    )


def _qwen_vl(
    transformers: Any, family: str, dims: _Dims, corpus: Sequence[str] | None, default_system: str
) -> tuple[Any, Any]:
    """Qwen2-VL, Qwen2.5-VL or Qwen3-VL: the same tokens and prompt layout, different towers."""
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"]
    special += ["<|image_pad|>", "<|video_pad|>"]
    tokenizer = _tokenizer(
        transformers,
        special,
        bos="<|im_start|>",
        eos="<|im_end|>",
        pad="<|endoftext|>",
        template=QWEN2_VL_TEMPLATE.replace(DEFAULT_SYSTEM, default_system),
        corpus=corpus,
    )
    # tiny: 56 x 56 pixels, 4 x 4 patches of 14, merged 2 x 2 into 4 visual tokens per image
    # (Qwen3-VL: patches of 16, so 64 x 64 pixels)
    patch = 16 if family == "qwen3_vl" else 14
    pixels = (dims.image_side * patch // 14) ** 2
    image_processor = transformers.Qwen2VLImageProcessorPil(
        min_pixels=pixels, max_pixels=pixels, patch_size=patch, merge_size=2, temporal_patch_size=2
    )
    head_dim = dims.hidden // dims.heads
    quarter = head_dim // 4
    text_name, config_name, model_name = _QWEN_CLASSES[family]
    rope: dict[str, Any] = {
        "rope_type": "default",
        "rope_theta": 10000.0,
        "mrope_section": [quarter, quarter, head_dim // 2 - 2 * quarter],
    }
    if family == "qwen3_vl":
        rope["mrope_interleaved"] = True
    text_config = getattr(transformers, text_name)(
        vocab_size=len(tokenizer),
        hidden_size=dims.hidden,
        intermediate_size=dims.intermediate,
        num_hidden_layers=dims.layers,
        num_attention_heads=dims.heads,
        num_key_value_heads=dims.kv_heads,
        head_dim=head_dim,
        max_position_embeddings=4096,
        rope_parameters=rope,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = getattr(transformers, config_name)(
        text_config=text_config.to_dict(),
        vision_config=_qwen_vision(transformers, family, dims).to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    # the processor wants a video processor (torchvision): tokenizer (with the template) and image
    # processor are saved apart, which load_processor assembles without one
    return config, (tokenizer, image_processor, getattr(transformers, model_name), None)


def _llava(transformers: Any, dims: _Dims) -> tuple[Any, Any]:
    tokenizer = _tokenizer(
        transformers,
        ["<unk>", "<s>", "</s>", "<image>"],
        bos="<s>",
        eos="</s>",
        pad="<unk>",
        template=LLAVA_TEMPLATE,
    )
    # 32 x 32 pixels in patches of 8: 16 visual tokens per image (the CLS token is dropped)
    image_processor = transformers.CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    text_config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=dims.hidden,
        intermediate_size=dims.intermediate,
        num_hidden_layers=dims.layers,
        num_attention_heads=dims.heads,
        num_key_value_heads=dims.kv_heads,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    vision_config = transformers.CLIPVisionConfig(
        hidden_size=dims.vision_hidden,
        intermediate_size=dims.vision_hidden * 2,
        num_hidden_layers=dims.vision_layers,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        projection_dim=dims.vision_hidden,
    )
    config = transformers.LlavaConfig(
        text_config=text_config.to_dict(),
        vision_config=vision_config.to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    processor = transformers.LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE,
    )
    return config, (tokenizer, image_processor, transformers.LlavaForConditionalGeneration, processor)


def _gemma3(transformers: Any, dims: _Dims) -> tuple[Any, Any]:
    special = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"]
    special += ["<start_of_image>", "<end_of_image>", "<image_soft_token>"]
    tokenizer = _tokenizer(
        transformers,
        special,
        bos="<bos>",
        eos="<end_of_turn>",
        pad="<pad>",
        template=GEMMA3_TEMPLATE,
        named_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
    )
    # 32 x 32 pixels in SigLIP patches of 8 (4 x 4), average-pooled into 2 x 2 = 4 visual tokens
    image_processor = transformers.Gemma3ImageProcessorPil(size={"height": 32, "width": 32})
    text_config = transformers.Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=dims.hidden,
        intermediate_size=dims.intermediate,
        num_hidden_layers=dims.layers,
        num_attention_heads=dims.heads,
        num_key_value_heads=dims.kv_heads,
        head_dim=dims.hidden // dims.heads,
        sliding_window=512,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision_config = transformers.SiglipVisionConfig(
        hidden_size=dims.vision_hidden,
        intermediate_size=dims.vision_hidden * 2,
        num_hidden_layers=dims.vision_layers,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    config = transformers.Gemma3Config(
        text_config=text_config.to_dict(),
        vision_config=vision_config.to_dict(),
        mm_tokens_per_image=4,
        boi_token_index=tokenizer.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tokenizer.convert_tokens_to_ids("<end_of_image>"),
        image_token_index=tokenizer.image_token_id,
        tie_word_embeddings=False,
    )
    processor = transformers.Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=GEMMA3_TEMPLATE,
        image_seq_length=4,
    )
    return config, (tokenizer, image_processor, transformers.Gemma3ForConditionalGeneration, processor)


def make_tiny_family(
    family: Family,
    out_dir: Path,
    *,
    size: Size = "tiny",
    corpus: Sequence[str] | None = None,
    default_system: str = DEFAULT_SYSTEM,
    language_init_std: float | None = None,
) -> Path:
    """Write a random-weight model folder of ``family`` (weights, processor, chat template) to ``out_dir``.

    ``corpus`` trains the tokenizer instead of the built-in sentences (``gap lab`` gives its prompts,
    so they cost few tokens); ``default_system`` replaces the Qwen templates' default system prompt
    (``gap lab`` gives the game's, so training and evaluation render the prompt the game sends).
    ``language_init_std`` redraws the language model's matrices (embeddings, projections, output head)
    from a normal of that deviation, the vision tower keeping the config's 0.02: at the lab's width
    of 64, 0.02 starts the model in a plateau where it answers from the question alone for thousands
    of steps, and 0.1 leaves it early (``benchmarks/lab_sight.py --init-std``).
    """
    from gap.models.transformers_backend import import_stack

    if family not in FAMILIES:
        raise ConfigError(f"unknown tiny family {family!r}; expected one of {', '.join(FAMILIES)}")
    out_dir = Path(out_dir)
    if (corpus is not None or default_system != DEFAULT_SYSTEM) and not family.startswith("qwen"):
        raise ConfigError("a corpus or a default system prompt is supported for the Qwen families only")
    if family == "idefics3" and size == "tiny":
        from gap.models.tiny import make_tiny_vlm

        return make_tiny_vlm(out_dir)
    if family == "idefics3":
        raise ConfigError("only a tiny Idefics3 is built here; use qwen2_vl for bench or gpu sizes")
    torch, transformers = import_stack()
    out_dir.mkdir(parents=True, exist_ok=True)
    dims = _DIMS[size]
    if family == "llava":
        config, (tokenizer, image_processor, model_class, processor) = _llava(transformers, dims)
    elif family == "gemma3":
        config, (tokenizer, image_processor, model_class, processor) = _gemma3(transformers, dims)
    else:
        config, (tokenizer, image_processor, model_class, processor) = _qwen_vl(
            transformers, family, dims, corpus, default_system
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = model_class(config).eval()
        if language_init_std is not None:
            # in module order (a dict, not a set), so the seeded draws land the same on every build
            language = dict.fromkeys(
                [*model.get_decoder().parameters(), *model.get_output_embeddings().parameters()]
            )
            for weights in language:
                if weights.dim() == 2:
                    torch.nn.init.normal_(weights, 0.0, language_init_std)
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=16,
    )
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    image_processor.save_pretrained(out_dir)
    if processor is not None:
        processor.save_pretrained(out_dir)
    return out_dir
