"""A dataset card (README.md with plots) for an export: what is in it and where it came from."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gap._fs import atomic_write_bytes
from gap.data._export import read_manifest
from gap.data._io import atomic_write_text
from gap.data._questions import QUESTION_TYPES, question_type
from gap.data._records import Record, read_records

CARD_FILE = "README.md"
PLOTS_DIR = "card"

_LOADING = {
    "llava": "LLaVA: `--data_path {dir}/train.json --image_folder {dir}`.",
    "sharegpt": "LLaMA-Factory: `dataset_dir: {dir}` and `dataset: {name}_train` (see `dataset_info.json`).",
    "swift": "ms-swift: `swift sft --dataset {dir}/train.jsonl`, run in `{dir}` (image paths are relative).",
    "hf": "Hugging Face: `datasets.load_from_disk('{dir}')`; TRL's SFTTrainer reads `messages` + `images`.",
}


def _words(text: str) -> int:
    return len(text.split())


def _length_stats(values: Sequence[int]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "median": 0.0, "p90": 0.0, "max": 0.0}
    ordered = sorted(values)
    return {
        "mean": statistics.fmean(ordered),
        "median": float(statistics.median(ordered)),
        "p90": float(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]),
        "max": float(ordered[-1]),
    }


def card_stats(records: Sequence[Record]) -> dict[str, Any]:
    """The numbers the card reports, as plain data (also handy for tests)."""
    splits = Counter(r.split for r in records)
    split_of: dict[str, set[str]] = {}
    for r in records:
        split_of.setdefault(r.image_id, set()).add(r.split)
    types = Counter(question_type(r.question) for r in records)
    players = Counter(p for r in records for p in r.provenance.players)
    dates = sorted(d for r in records for d in (r.provenance.asked_at,) if d)
    posteriors = [r.provenance.posterior for r in records if r.provenance.posterior is not None]
    return {
        "records": len(records),
        "splits": dict(sorted(splits.items())),
        "images": len(split_of),
        "images_in_several_splits": sum(1 for names in split_of.values() if len(names) > 1),
        "multi_turn": sum(1 for r in records if len(r.messages) > 2),
        "question_types": {name: types.get(name, 0) for name in QUESTION_TYPES},
        "answer_words": _length_stats([_words(r.answer) for r in records]),
        "question_words": _length_stats([_words(r.question) for r in records]),
        "players": len(players),
        "records_per_player": _length_stats(list(players.values())),
        "sources": dict(Counter(r.provenance.source for r in records)),
        "reference_sources": dict(Counter(r.provenance.reference_source for r in records)),
        "reference_models": dict(
            Counter(r.provenance.reference_model for r in records if r.provenance.reference_model)
        ),
        "game_models": dict(Counter(r.provenance.model for r in records if r.provenance.model)),
        "posterior_min": min(posteriors) if posteriors else None,
        "posterior_mean": statistics.fmean(posteriors) if posteriors else None,
        "merged": sum(len(r.merged_questions) for r in records),
        "hinted": sum(1 for r in records if r.provenance.hinted),
        "first_date": dates[0] if dates else None,
        "last_date": dates[-1] if dates else None,
    }


def _plot_png(kind: str, records: Sequence[Record], stats: dict[str, Any]) -> bytes:
    """A small PNG, drawn with matplotlib's object API (no pyplot, no global backend state)."""
    import io

    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.2), dpi=100)
    ax = fig.subplots()
    if kind == "question_types":
        names = list(stats["question_types"])
        ax.bar(names, [stats["question_types"][n] for n in names], color="#4c72b0")
        ax.set_ylabel("records")
        ax.set_title("Question types")
    else:
        lengths = [_words(r.answer) for r in records]
        ax.hist(lengths, bins=min(30, max(5, len(set(lengths)))), color="#55a868")
        ax.set_xlabel("reference answer length (words)")
        ax.set_ylabel("records")
        ax.set_title("Answer lengths")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _split_note(shared: int) -> str:
    if shared == 0:
        return "Split by image: no image appears in two splits.\n\n"
    return (
        f"**{shared} image(s) appear in more than one split** (splits kept as imported); "
        "re-export with `--split val=0.1` to split by image.\n\n"
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def render_card(manifest: dict[str, Any], records: Sequence[Record], stats: dict[str, Any]) -> str:
    fmt, name = manifest.get("format", "?"), manifest.get("name", "gap")
    total = max(stats["records"], 1)
    licence = "license: apache-2.0\n" if set(stats["sources"]) == {"gap-vqa"} else ""
    front = (
        "---\n"
        f"{licence}"
        "task_categories:\n- visual-question-answering\n- image-text-to-text\n"
        "language:\n- en\n"
        "tags:\n- gap\n- adversarial\n- vlm-fine-tuning\n"
        f"pretty_name: {name} (GAP export)\n"
        "---\n\n"
    )
    types = [(t, n, f"{100 * n / total:.1f}%") for t, n in stats["question_types"].items()]
    answers, questions = stats["answer_words"], stats["question_words"]
    lengths = [
        ("reference answer", *(_fmt(answers[k]) for k in ("mean", "median", "p90", "max"))),
        ("question", *(_fmt(questions[k]) for k in ("mean", "median", "p90", "max"))),
    ]
    split_rows = [(s, n) for s, n in stats["splits"].items()]
    refs = ", ".join(f"{k}: {v}" for k, v in stats["reference_sources"].items()) or "none"
    ref_models = ", ".join(f"`{k}` ({v})" for k, v in stats["reference_models"].items()) or "none"
    game_models = ", ".join(f"`{k}` ({v})" for k, v in stats["game_models"].items()) or "not recorded"
    sources = ", ".join(f"{k}: {v}" for k, v in stats["sources"].items())
    theta = manifest.get("theta")
    parts = [
        front,
        f"# {name}\n\n",
        "Visual question answering conversations on which a vision-language model was caught wrong, "
        "collected by GAP (Gamified Adversarial Prompting) and paired with correct reference answers. "
        "Each record is one image, the questions asked about it up to the one the model got wrong, "
        "and the reference answer to that question.\n\n",
        f"- Format: `{fmt}`. {_LOADING.get(fmt, '').format(dir='.', name=name)}\n",
        f"- Exported: {manifest.get('created_at', '?')} by GAP {manifest.get('gap_version', '?')}\n",
        f"- Records: {stats['records']} on {stats['images']} images ({stats['multi_turn']} multi-turn); "
        f"images local: {manifest.get('images', {}).get('local', '?')}, "
        f"remote URLs: {manifest.get('images', {}).get('remote', '?')}\n\n",
        "## Splits\n\n",
        _split_note(stats["images_in_several_splits"]),
        _table(split_rows, ("split", "records")),
        "\n\n## Question types\n\nKeyword classification of the kept question.\n\n",
        _table(types, ("type", "records", "share")),
        f"\n\n![question types]({PLOTS_DIR}/question_types.png)\n\n",
        "## Lengths (words)\n\n",
        _table(lengths, ("text", "mean", "median", "p90", "max")),
        f"\n\n![answer lengths]({PLOTS_DIR}/answer_lengths.png)\n\n",
        "## Players and filtering\n\n",
        f"- Players: {stats['players']} (records per player: median "
        f"{_fmt(stats['records_per_player']['median'])}, max {_fmt(stats['records_per_player']['max'])})\n",
        f"- theta (keep a Wrong verdict when P(model wrong) >= theta): {_fmt(theta)}\n",
        f"- Posterior of kept turns: min {_fmt(stats['posterior_min'])}, "
        f"mean {_fmt(stats['posterior_mean'])}\n",
        f"- Near-duplicate questions merged: {stats['merged']}\n",
        f"- Kept questions asked as the game's hint suggested them (`GAP_HINTS`): {stats['hinted']}\n\n",
        "## Provenance\n\n",
        f"- Sources: {sources}\n",
        f"- Reference answers by: {refs}; reference models: {ref_models}\n",
        f"- Models whose answers were judged wrong: {game_models}\n",
        f"- Questions asked between {stats['first_date'] or 'n/a'} and {stats['last_date'] or 'n/a'}\n",
        f"- Export options: split {manifest.get('split') or 'as recorded'}, seed {manifest.get('seed')}, "
        f"source {manifest.get('source', '?')}\n",
    ]
    return "".join(parts)


def write_card(directory: Path) -> Path:
    """Write ``README.md`` and its plots into an export folder; returns the README's path."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    records = read_records(directory)
    stats = card_stats(records)
    for kind in ("question_types", "answer_lengths"):
        atomic_write_bytes(directory / PLOTS_DIR / f"{kind}.png", _plot_png(kind, records, stats))
    path = directory / CARD_FILE
    atomic_write_text(path, render_card(manifest, records, stats))
    return path
