"""The hf export feeds TRL's vision-language collator and a model's forward pass as it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from gap.data import Record, export_records


def test_trl_collator_batches_the_hf_export(
    tmp_path: Path, records: list[Record], tiny_vlm_dir: Path
) -> None:
    datasets = pytest.importorskip("datasets")
    torch = pytest.importorskip("torch")
    sft = pytest.importorskip("trl.trainer.sft_trainer")
    from transformers import AutoModelForImageTextToText, AutoProcessor

    export_records(records, tmp_path / "hf", fmt="hf")
    train = datasets.load_from_disk(str(tmp_path / "hf"))["train"]
    processor = AutoProcessor.from_pretrained(tiny_vlm_dir)
    collator = sft.DataCollatorForVisionLanguageModeling(processor)
    batch = collator([train[i] for i in range(len(train))])

    image_token = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert batch["pixel_values"].shape[0] == len(records)  # one image per record
    per_row = (batch["input_ids"] == image_token).sum(dim=1)
    assert per_row.min() == per_row.max() > 0  # every record got its image tokens, once
    text = processor.tokenizer.decode(batch["input_ids"][2])
    assert "Is there a bus on the left?" in text and "No, there is no bus." in text  # multi-turn kept

    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm_dir)
    with torch.no_grad():
        loss = model(**batch).loss
    assert torch.isfinite(loss)
