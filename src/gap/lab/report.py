"""The lab's report: every figure computed from the run, as `report.json`, `report.md` and PNGs.

Scores are exact-match against the world's truth (`gap eval score --metric exact-match`), per
question type of the lab (the world knows each item's type). Differences are fine-tuned minus base
on the same items, with a 95% interval and a two-sided p-value from the paired bootstrap over
images (:mod:`gap.evaluate._stats`, the statistics `gap eval compare` uses).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from gap.data._io import atomic_write_json, atomic_write_text
from gap.evaluate._stats import clustered_bootstrap, paired_bootstrap_p
from gap.lab import world

if TYPE_CHECKING:
    from gap.lab.loop import Collected
    from gap.lab.players import PlayerSpec

Items = Mapping[str, Mapping[str, Any]]
Scores = Mapping[str, float]


def _num(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or value != value else round(float(value), digits)


def accuracy(items: Items, scores: Scores, ids: Sequence[str]) -> dict[str, Any]:
    """Mean exact-match of ``ids`` with its image-clustered 95% interval."""
    values = [scores[i] for i in ids]
    interval = clustered_bootstrap(values, [str(items[i]["image_id"]) for i in ids])
    return {
        "score": _num(interval.mean),
        "ci_low": _num(interval.low),
        "ci_high": _num(interval.high),
        "n": len(ids),
    }


def paired_gain(items: Items, base: Scores, tuned: Scores, ids: Sequence[str]) -> dict[str, Any]:
    """Tuned minus base on ``ids``: mean difference, its 95% interval and the paired bootstrap p."""
    if not ids:
        return {"diff": None, "ci_low": None, "ci_high": None, "p_value": None, "n": 0}
    first = [base[i] for i in ids]
    second = [tuned[i] for i in ids]
    clusters = [str(items[i]["image_id"]) for i in ids]
    diffs = [b - a for a, b in zip(first, second, strict=True)]
    interval = clustered_bootstrap(diffs, clusters)
    return {
        "diff": _num(float(np.mean(diffs))),
        "ci_low": _num(interval.low),
        "ci_high": _num(interval.high),
        "p_value": _num(paired_bootstrap_p(first, second, clusters)),
        "n": len(ids),
    }


def _ids(items: Items, *, kind: str, types: Sequence[str]) -> list[str]:
    return [i for i, item in items.items() if item["set"] == kind and item["qtype"] in types]


def image_use(items: Items, answers: Mapping[str, str | None], scores: Scores) -> dict[str, Any]:
    """Does a model's answer depend on the image? Two measures per type, on the test items whose
    question text is asked about several images (``n``).

    ``varying``: the share of those question texts whose answers are not all the same (0 for a model
    that ignores the image). ``blind``: the best a model that ignores the image could score on the
    same items, answering each text with its commonest true answer there (an upper bound: it picks
    that answer knowing the truths), beside the model's own ``score``. A score above ``blind`` can
    only come from the image.
    """
    by_type: dict[str, Any] = {}
    for qtype in world.QUESTION_TYPES:
        asked: dict[str, list[str]] = defaultdict(list)
        for item_id in _ids(items, kind="test", types=[qtype]):
            asked[str(items[item_id]["question"])].append(item_id)
        repeated = [ids for ids in asked.values() if len(ids) > 1]
        answered = [{world.normalise_answer(qtype, answers.get(i) or "") for i in ids} for ids in repeated]
        n = sum(len(ids) for ids in repeated)
        best = sum(Counter(str(items[i]["reference"]) for i in ids).most_common(1)[0][1] for ids in repeated)
        by_type[qtype] = {
            "varying": _num(float(np.mean([len(a) > 1 for a in answered]))) if answered else None,
            "questions": len(repeated),
            "n": n,
            "score": _num(float(np.mean([scores[i] for ids in repeated for i in ids]))) if n else None,
            "blind": _num(best / n) if n else None,
        }
    return by_type


def taint_compliance(turns_table: Path, collected: Collected) -> dict[str, Any]:
    """How the base model followed the taint instruction in the game, from the stored turns.

    ``instructed_wrong``: share of instructed answers that were wrong against the truth (1 = always
    follows it); ``plain_right_tainted``: share of plain answers on tainted images that were right.
    """
    table = pd.read_parquet(turns_table)
    instructed = dict(zip(table["turn_id"].astype(str), table["instructed"].astype(bool), strict=True))
    by_kind: dict[str, list[bool]] = defaultdict(list)
    by_type: dict[str, list[bool]] = defaultdict(list)
    for turn in collected.log.turns:
        if turn.turn_id not in instructed:
            continue
        if instructed[turn.turn_id]:
            by_kind["instructed_wrong"].append(not turn.model_right)
            by_type[turn.qtype].append(not turn.model_right)
        elif turn.tainted:
            by_kind["plain_right_tainted"].append(turn.model_right)
        else:
            by_kind["right_untainted"].append(turn.model_right)
    share = {k: _num(float(np.mean(v))) if v else None for k, v in by_kind.items()}
    return {
        **share,
        "n": {k: len(v) for k, v in by_kind.items()},
        "instructed_wrong_by_type": {k: _num(float(np.mean(v))) for k, v in sorted(by_type.items())},
        "how": "learned: instructed examples in the base model's curriculum (no wrapper)",
    }


def fatigue_effects(
    fit_summary: Mapping[str, Any],
    truth: Mapping[str, Any],
    collected: Collected,
    players: Sequence[PlayerSpec],
) -> dict[str, Any]:
    """The player model's time and fatigue coefficients fitted from the verdicts (`gap quality fit`)
    beside the same model fitted on the truth (:func:`gap.lab.players.true_effects`: success = the
    model really was wrong), the players' fatigue, and verdict accuracy by image position."""
    model = fit_summary.get("player_model") or {}
    fitted = {
        name: {"coef": _num(v["coef"]), "se": _num(v["se"])} for name, v in (model.get("coef") or {}).items()
    }
    agree: dict[int, list[bool]] = defaultdict(list)
    for turn in collected.log.turns:
        agree[turn.image_index].append((turn.verdict == "wrong") != turn.model_right)
    kinds: dict[str, list[float]] = defaultdict(list)
    for spec in players:
        kinds[spec.kind].append(spec.fatigue)
    return {
        "fitted": {
            "identified": model.get("identified"),
            "not_identified": model.get("not_identified"),
            "coef": fitted,
        },
        "truth": {
            "identified": truth.get("identified"),
            "not_identified": truth.get("not_identified"),
            "coef": {
                name: {"coef": _num(c), "se": _num(truth["se"][name])} for name, c in truth["coef"].items()
            },
            "focus": truth.get("focus"),
            "fatigue_by_kind": {k: _num(float(np.mean(v))) for k, v in sorted(kinds.items())},
        },
        "verdict_accuracy_by_image": {str(k): _num(float(np.mean(v))) for k, v in sorted(agree.items())},
    }


def build_report(
    *,
    size_name: str,
    seed: int,
    size: Mapping[str, Any],
    weak_types: Sequence[str],
    items: Items,
    runs: Mapping[str, Scores],
    sets: Mapping[str, int],
    collected: Collected,
    players: Sequence[PlayerSpec],
    fit_summary: Mapping[str, Any],
    true_effects: Mapping[str, Any],
    clock: Mapping[str, Any],
    turns_table: Path,
    base_info: Mapping[str, Any],
    base_answers: Mapping[str, Mapping[str, str | None]],
    stages: Mapping[str, Any],
    wall_s: float,
) -> dict[str, Any]:
    """Every figure of the run (report.json's content). ``base_answers``: per family, the base
    model's answer to every item, by id (for :func:`image_use`)."""
    from gap.lab.loop import FAMILY_B, MAIN_THETA, THETAS, base_run

    base = runs["base"]
    main = f"theta-{MAIN_THETA:g}"
    types = list(world.QUESTION_TYPES)
    weak = _ids(items, kind="test", types=weak_types)
    adversarial = _ids(items, kind="adversarial", types=types)

    def weak_gain(run: str, against: str = "base") -> dict[str, Any] | None:
        return paired_gain(items, runs[against], runs[run], weak) if run in runs else None

    accuracy_by_run = {
        name: {
            **{t: accuracy(items, scores, _ids(items, kind="test", types=[t])) for t in types},
            "adversarial": accuracy(items, scores, adversarial) if adversarial else None,
        }
        for name, scores in runs.items()
    }
    tuned = runs.get(main)
    gain = {
        t: paired_gain(items, base, tuned, _ids(items, kind="test", types=[t])) if tuned else None
        for t in types
    }
    sweep = []
    for theta in THETAS:
        records = collected.records[theta]
        name = f"theta-{theta:g}"
        sweep.append(
            {
                "theta": theta,
                "kept": len(records),
                "trained_on": sets.get(name, 0),
                "precision": _num(collected.precision(records)),
                "gain": weak_gain(name),
            }
        )
    cross = f"{main}-{FAMILY_B}"
    return {
        "size": size_name,
        "seed": seed,
        "settings": size,
        "weak_types": list(weak_types),
        "turns": len(collected.log.turns),
        "clock": dict(clock),
        "players": {k: sum(p.kind == k for p in players) for k in sorted({p.kind for p in players})},
        "accuracy": accuracy_by_run,
        "gain": gain,
        "gain_weak": weak_gain(main),
        "gain_adversarial": paired_gain(items, base, tuned, adversarial) if tuned else None,
        "kept_precision": _num(collected.precision(collected.records[MAIN_THETA])),
        "theta_sweep": sweep,
        "baselines": {
            "random": weak_gain("random"),
            "unfiltered": weak_gain("theta-0"),
            "oracle": weak_gain("oracle"),
            "training_examples": {k: sets.get(k, 0) for k in ("random", "theta-0", "oracle", main, "replay")},
        },
        "cross_model": {"family": FAMILY_B, "gain": weak_gain(cross, base_run(FAMILY_B))},
        "taint": taint_compliance(turns_table, collected),
        "fatigue": fatigue_effects(fit_summary, true_effects, collected, players),
        "quality_fit": {
            "n_turns": fit_summary.get("n_turns"),
            "n_candidates": fit_summary.get("n_candidates"),
            "n_kept": fit_summary.get("n_kept"),
            "pi": _num((fit_summary.get("reliability") or {}).get("pi")),
        },
        "base_models": {
            family: {"records": info["records"], "final_loss": _num(info["losses"][-1]), "key": info["key"]}
            for family, info in base_info.items()
        },
        "image_use": {
            family: image_use(items, answers, runs[base_run(family)])
            for family, answers in base_answers.items()
        },
        "stages": dict(stages),
        "wall_s": round(wall_s, 1),
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _coef(value: Mapping[str, Any] | None) -> str:
    return "-" if not value else f"{_fmt(value['coef'])} ± {_fmt(value['se'])}"


def _gain_cell(gain: Mapping[str, Any] | None) -> str:
    if not gain or gain.get("diff") is None:
        return "- (not trained: empty set)"
    return (
        f"{gain['diff']:+.3f} [{_fmt(gain['ci_low'])}, {_fmt(gain['ci_high'])}], p = {_fmt(gain['p_value'])}"
        f" (n {gain['n']})"
    )


def _blind_warning(data: Mapping[str, Any]) -> list[str]:
    """A first paragraph when the main base model shows no sight on any type (its answers never
    change with the image, or it scores no better than the best blind model): then no figure below
    can show that the game's data improves how a model sees."""
    family, by_type = next(iter(data["image_use"].items()))
    rows = [row for row in by_type.values() if row["questions"]]
    varies = any(row["varying"] > 0 for row in rows)
    beats = any(row["score"] > row["blind"] for row in rows)
    if varies and beats:
        return []
    why = (
        "its answers never change with the image"
        if not varies
        else "it scores no better than a model that ignores it"
    )
    return [
        f"**The {family} base model does not use the image**: {why} (see *Does the base model use the "
        "image?*), so the gains below measure answer priors, not sight.",
        "",
    ]


def markdown(data: Mapping[str, Any]) -> str:
    """report.md: the questions of issue 13 answered with the run's figures."""
    types = list(world.QUESTION_TYPES)
    lines = [
        f"# gap lab report (size {data['size']}, seed {data['seed']})",
        "",
        f"{data['turns']} judged turns from {sum(data['players'].values())} simulated players "
        f"({', '.join(f'{n} {k}' for k, n in data['players'].items())}) through `gap serve`; "
        f"weak types by construction of the curriculum: {', '.join(data['weak_types'])}. "
        f"Scores are exact-match against the world's truth; differences are fine-tuned (theta 0.8) minus "
        "base, 95% intervals and p-values from the paired bootstrap over images. "
        f"Wall time {data['wall_s']} s.",
        "",
        *_blind_warning(data),
        "## Base vs fine-tuned per question type (held-out test scenes)",
        "",
        "| type | base | fine-tuned | difference [95% CI], p |",
        "|---|---|---|---|",
    ]
    base, tuned = data["accuracy"]["base"], data["accuracy"].get("theta-0.8")
    for t in types:
        lines.append(
            f"| {t} | {_fmt(base[t]['score'])} | {_fmt(tuned[t]['score']) if tuned else '-'} "
            f"| {_gain_cell(data['gain'][t])} |"
        )
    lines += [
        "",
        f"Weak types pooled: {_gain_cell(data['gain_weak'])}. Held-out adversarial questions (other players' "
        f"kept questions, never trained on): {_gain_cell(data['gain_adversarial'])}.",
        "",
        "![per type](per_type.png)",
        "",
        "## Theta sweep",
        "",
        "| theta | kept | trained on (players not held out) | precision against the truth "
        "| gain on weak types |",
        "|---|---|---|---|---|",
    ]
    for row in data["theta_sweep"]:
        lines.append(
            f"| {row['theta']:g} | {row['kept']} | {row['trained_on']} | {_fmt(row['precision'])} "
            f"| {_gain_cell(row['gain'])} |"
        )
    b = data["baselines"]
    n = b["training_examples"]
    lines += [
        "",
        "![theta sweep](theta_sweep.png)",
        "",
        "## Baselines (same number of steps; random and oracle get theta 0.8's number of examples)",
        "",
        f"- random template questions (no game, true answers; {n['random']} examples): "
        + _gain_cell(b["random"]),
        f"- unfiltered (theta 0, everything flagged; {n['theta-0']} examples): "
        + _gain_cell(b["unfiltered"]),
        f"- oracle filter (really wrong, correct correction; {n['oracle']} examples): "
        + _gain_cell(b["oracle"]),
        f"- theta 0.8 ({n['theta-0.8']} examples): " + _gain_cell(data["gain_weak"]),
        "",
        f"Every set, theta's included, is trained with the same {n['replay']} records of the base "
        "model's own curriculum replayed beside it, so that fine-tuning adds to what the model knew "
        "instead of replacing it.",
        "",
        "![baselines](baselines.png)",
        "",
        "## Cross-model",
        "",
        f"The theta 0.8 data collected against qwen2_vl trains a {data['cross_model']['family']} base "
        f"(same curriculum): gain on weak types {_gain_cell(data['cross_model']['gain'])}.",
        "",
        "## Does the base model use the image?",
        "",
        "Per base model and type, on the test questions whose text is asked about several images: the "
        "share of those texts whose answers change with the image, and the base's score beside the best "
        "a model that ignores the image could score there (each text answered with its commonest true "
        "answer).",
        "",
        "| base | type | answers vary (texts) | score (n) | blind model |",
        "|---|---|---|---|---|",
    ]
    for family, by_type in data["image_use"].items():
        lines += [
            f"| {family} | {t} | {_fmt(row['varying'])} ({row['questions']}) "
            f"| {_fmt(row['score'])} ({row['n']}) | {_fmt(row['blind'])} |"
            for t, row in by_type.items()
        ]
    lines += [
        "",
        "## The taint instruction",
        "",
    ]
    taint = data["taint"]
    lines += [
        f"The base model follows the taint instruction itself ({taint['how']}): "
        f"{_fmt(taint.get('instructed_wrong'))} of its instructed answers in the game were wrong "
        f"(n {taint['n'].get('instructed_wrong', 0)}; by type {taint['instructed_wrong_by_type']}); "
        f"{_fmt(taint.get('plain_right_tainted'))} of its plain answers on tainted images were right "
        f"(n {taint['n'].get('plain_right_tainted', 0)}), {_fmt(taint.get('right_untainted'))} "
        "on untainted images.",
        "",
        "## Fatigue and time pressure",
        "",
    ]
    fatigue = data["fatigue"]
    fitted, truth, clock = fatigue["fitted"], fatigue["truth"], data["clock"]
    lines += [
        "The player model (equation 5: P(kept Wrong) = sigmoid(c + A - B - g t - f n)) fitted from the "
        "players' verdicts by `gap quality fit`, beside the same model fitted on the truth (the model's "
        "answer really was wrong; the simulated players probe worse when rushed or tired, "
        f"focus {truth['focus']}):",
        "",
        "| coefficient | fitted from verdicts | fitted on the truth |",
        "|---|---|---|",
        *[
            f"| {name} | {_coef(fitted['coef'].get(name))} | {_coef(truth['coef'].get(name))} |"
            for name in ("intercept", "time", "fatigue")
        ],
        "",
        f"Identified: from verdicts {fitted['identified']}"
        + (f" ({fitted['not_identified']})" if fitted["not_identified"] else "")
        + f", on the truth {truth['identified']}"
        + (f" ({truth['not_identified']})" if truth["not_identified"] else "")
        + ". Players' own fatigue (share of their edge lost per image), mean by kind: "
        f"{truth['fatigue_by_kind']}; "
        f"verdicts agreeing with the truth by image position: {fatigue['verdict_accuracy_by_image']}.",
        "",
        "![fatigue](fatigue.png)",
        "",
        f"Quality fit: {data['quality_fit']}. Kept precision at theta 0.8: {_fmt(data['kept_precision'])}.",
        "",
        f"The fit and the exports read the players' clock (`elapsed_s` of {clock['turns']} stored turns set "
        "from the play log); "
        f"the server's own clock ran later by the requests' latency, {clock['latency_ms']} ms. Rounds the "
        f"server's clock ended before the player's: {clock['cut_rounds']} (0: what was played did not "
        "depend on the server's timing).",
        "",
        "## Stages",
        "",
        "| stage | wall s | CPU s |",
        "|---|---|---|",
        *[f"| {k} | {v['wall_s']} | {v['cpu_s']} |" for k, v in data["stages"].items()],
        "",
    ]
    return "\n".join(lines)


def _spread(centre: float, bound: float | None) -> float:
    """An error bar's length from ``centre`` to an interval bound (0 when there is none)."""
    return abs(centre - bound) if bound is not None else 0.0


def _plots(data: Mapping[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    types = list(world.QUESTION_TYPES)
    fig, ax = plt.subplots(figsize=(7, 4))
    for offset, name in ((-0.2, "base"), (0.2, "theta-0.8")):
        rows = data["accuracy"].get(name)
        if rows is None:
            continue
        scores = [rows[t]["score"] or 0.0 for t in types]
        errors = [
            [_spread(v, rows[t]["ci_low"]) for v, t in zip(scores, types, strict=True)],
            [_spread(v, rows[t]["ci_high"]) for v, t in zip(scores, types, strict=True)],
        ]
        ax.bar(np.arange(len(types)) + offset, scores, 0.4, yerr=errors, capsize=3, label=name)
    ax.set_xticks(np.arange(len(types)), types)
    ax.set_ylabel("exact match (95% CI)")
    ax.set_title("base vs fine-tuned at theta 0.8, held-out scenes")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "per_type.png", dpi=100)
    plt.close(fig)

    sweep = data["theta_sweep"]
    thetas = [row["theta"] for row in sweep]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(thetas, [row["kept"] for row in sweep], "o-", label="kept")
    left.set_xlabel("theta")
    left.set_ylabel("kept turns")
    twin = left.twinx()
    twin.plot(
        thetas,
        [row["precision"] if row["precision"] is not None else np.nan for row in sweep],
        "s--",
        color="C1",
    )
    twin.set_ylabel("precision against the truth", color="C1")
    gains = [(row["gain"] or {}).get("diff") for row in sweep]
    right.plot(thetas, [g if g is not None else np.nan for g in gains], "o-")
    right.axhline(0, color="grey", lw=0.5)
    right.set_xlabel("theta")
    right.set_ylabel("gain on weak types")
    fig.tight_layout()
    fig.savefig(out / "theta_sweep.png", dpi=100)
    plt.close(fig)

    names = ["random", "unfiltered", "oracle"]
    values = [data["baselines"][n] for n in names] + [data["gain_weak"], data["cross_model"]["gain"]]
    labels = [*names, "theta 0.8", f"cross ({data['cross_model']['family']})"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    diffs = [(v or {}).get("diff") or 0.0 for v in values]
    low = [_spread(d, (v or {}).get("ci_low")) for d, v in zip(diffs, values, strict=True)]
    high = [_spread(d, (v or {}).get("ci_high")) for d, v in zip(diffs, values, strict=True)]
    ax.bar(labels, diffs, yerr=[low, high], capsize=3)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_ylabel("gain on weak types (95% CI)")
    fig.tight_layout()
    fig.savefig(out / "baselines.png", dpi=100)
    plt.close(fig)

    by_image = data["fatigue"]["verdict_accuracy_by_image"]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([int(k) for k in by_image], [v if v is not None else np.nan for v in by_image.values()], "o-")
    ax.set_xlabel("image position in the session")
    ax.set_ylabel("verdicts agreeing with the truth")
    fig.tight_layout()
    fig.savefig(out / "fatigue.png", dpi=100)
    plt.close(fig)


def write_report(data: Mapping[str, Any], out: Path) -> Path:
    """``out/report.json``, ``out/report.md`` and the PNGs; returns the Markdown file."""
    atomic_write_json(out / "report.json", json.loads(json.dumps(data)))
    atomic_write_text(out / "report.md", markdown(data))
    _plots(data, out)
    return out / "report.md"
