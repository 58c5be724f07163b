"""A tiny random-weight Idefics3 (SmolVLM architecture) model, built offline in about a second.

No PyPI package ships real VLM weights, so tests, demos and CI play against this folder instead. It is
a real Hugging Face model folder: it loads through the same :class:`~gap.models.transformers_backend.
TransformersModel` path as a hub model and ``transformers serve DIR`` serves it. Its answers are
gibberish, but never empty: the saved generation config forces a few tokens and bans special and
whitespace-only tokens, so the game stays playable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gap.errors import ConfigError
from gap.models.transformers_backend import import_stack

SEED = 0
IMAGE_SIZE = 32
PATCH_SIZE = 8
SCALE_FACTOR = 2
# Visual tokens per image: (32 / 8) ** 2 patches, merged 2x2 by the connector.
IMAGE_SEQ_LEN = (IMAGE_SIZE // PATCH_SIZE) ** 2 // SCALE_FACTOR**2
VOCAB_SIZE = 512
MIN_NEW_TOKENS = 4

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<end_of_utterance>",
    "<image>",
    "<fake_token_around_image>",
    "<global-img>",
    *(f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)),
]

# SmolVLM's prompt layout. Content may be a string or a list of parts (text and image);
# Jinja runs with trim_blocks, hence the explicit '\n' after each utterance.
CHAT_TEMPLATE = (
    "<|im_start|>"
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}"
    "{{ ': ' + message['content'] }}"
    "{% else %}"
    "{% if message['content'] and message['content'][0]['type'] == 'image' %}{{ ':' }}"
    "{% else %}{{ ': ' }}{% endif %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}{{ '<image>' }}{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{{ '<end_of_utterance>' }}{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

_CORPUS = [
    "The picture shows a red car parked beside a tall green tree.",
    "There are three people standing near the window of a small house.",
    "A brown dog is sleeping on a blue sofa in the living room.",
    "What colour is the cat? The cat is black and white.",
    "How many birds are on the wire? Two birds are sitting on the wire.",
    "Is the sky cloudy? No, the sky is clear and bright.",
    "The woman on the left holds an umbrella while it rains.",
    "A plate of food with rice, beans and a slice of lemon.",
    "The sign on the building says open from nine to five.",
    "Yes. No. Maybe. I cannot tell from the image.",
    "Describe the scene: a street with shops, bikes and a bus.",
    "The answer is on the top right corner of the photo.",
]


def train_bpe(special_tokens: list[str], corpus: list[str], *, vocab_size: int) -> Any:
    """A byte-level BPE ``tokenizers.Tokenizer`` trained offline on ``corpus``: the tokenizer of every
    tiny test model, whatever family's special tokens it carries."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(corpus, trainer=trainer)
    return raw


def _build_tokenizer(transformers: Any) -> Any:
    """A byte-level BPE trained on a dozen sentences, with SmolVLM's special tokens and chat template."""
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=train_bpe(SPECIAL_TOKENS, _CORPUS * 4, vocab_size=VOCAB_SIZE),
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        extra_special_tokens=["<fake_token_around_image>", "<image>", "<global-img>"],
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
    )


def _banned_token_ids(tokenizer: Any) -> list[int]:
    """Tokens the model may never write: special ones but EOS, blank ones, and unprintable byte pieces.

    Special and blank tokens could leave an answer empty; lone bytes decode to control characters or
    U+FFFD. Banning them keeps the gibberish readable.
    """
    eos = tokenizer.eos_token_id
    special = {tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    unreadable = set()
    for index in range(len(tokenizer)):
        text = tokenizer.decode([index], skip_special_tokens=True)
        if not text.strip() or not text.isprintable() or "\ufffd" in text:
            unreadable.add(index)
    return sorted((special | unreadable) - {eos})


def make_tiny_vlm(out_dir: Path) -> Path:
    """Write the tiny model (weights, config, tokenizer, image processor, chat template) to ``out_dir``.

    The same folder is written every time: the weights come from a fixed seed in a forked RNG, so the
    caller's global torch RNG is left untouched.
    """
    torch, transformers = import_stack()
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the model folder {str(out_dir)!r}: {exc.strerror or exc}") from exc
    tokenizer = _build_tokenizer(transformers)
    image_processor = transformers.Idefics3ImageProcessorPil(
        size={"longest_edge": IMAGE_SIZE},
        max_image_size={"longest_edge": IMAGE_SIZE},
        do_image_splitting=False,
    )
    processor = transformers.Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=IMAGE_SEQ_LEN,
        chat_template=CHAT_TEMPLATE,
    )
    text_config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    vision_config = transformers.Idefics3VisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
    )
    config = transformers.Idefics3Config(
        text_config=text_config,
        vision_config=vision_config,
        scale_factor=SCALE_FACTOR,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = transformers.Idefics3ForConditionalGeneration(config).eval()
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        min_new_tokens=MIN_NEW_TOKENS,
        suppress_tokens=_banned_token_ids(tokenizer),
        max_new_tokens=32,
    )
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
