"""`gap lab run`: the whole GAP loop on the lab's world, through the real code paths, measured.

Stages: draw the world -> build (or reuse) the base models -> `gap serve` the base model on a
fresh SQLite database with the world's images -> simulated players play over HTTP -> `gap turns
export` + `gap quality fit` -> `gap data export` at each theta (and the baselines' sets) -> `gap
train` (LoRA from the base) on each -> `gap eval answer` + `gap eval score --metric exact-match` on
a held-out test set (fresh scenes, per question type) and on held-out adversarial questions (kept
questions of players whose data never trains) -> paired bootstrap against the base
(:mod:`gap.lab.report`). Every command but `gap serve` runs in this process
(:func:`gap.lab._cli.run_gap`), so torch loads once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import httpx
import pandas as pd
from rich.console import Console

from gap.data import Message, Provenance, Record, read_records, write_records
from gap.errors import GapError, InputError
from gap.evaluate import read_answers
from gap.lab import world
from gap.lab._cli import run_gap
from gap.lab.model import Recipe, build_bases, curriculum, recipe_info
from gap.lab.players import PlayedTurn, PlayLog, play, population, true_effects
from gap.train._tiny import Family

SizeName = Literal["ci", "full"]
THETAS: tuple[float, ...] = (0.0, 0.5, 0.8, 0.9, 0.95)
MAIN_THETA = 0.8
SIMULATED_ROUND_S = 120.0
"""The players' simulated round: the game's 120 s, which the server's real clock scales down."""
CLOCK_SHARE = 0.75
"""Share of the server's real round the players' simulated 120 s take: the rest is slack for the
requests' own latency, so the server's clock never ends a round before the player's does (which
would make what is played depend on the server's timing)."""
UNFILTERED = 1e-9
"""The export threshold standing for theta = 0 (everything players flagged)."""
METRIC = "exact-match"
FAMILY_A: Family = "qwen2_vl"
FAMILY_B: Family = "qwen2_5_vl"
"""The game plays family A's base; its data also trains family B's (cross-model transfer)."""
console = Console(stderr=True)


def base_run(family: str) -> str:
    """The name of a family's base-model evaluation (in ``eval/`` and the report's runs)."""
    return "base" if family == FAMILY_A else f"base-{family}"


@dataclass(frozen=True)
class LabSize:
    """How big one run is: the world, the players, the training budget and the test sets."""

    recipe: Recipe
    game_scenes: int
    players: int
    sessions_per_player: int
    concurrency: int
    test_scenes: int
    lora_steps: int
    lora_batch: int
    lora_lr: float
    heldout_every: int = 4
    """Every this-many-th player is held out: their kept questions are the adversarial test set."""
    round_seconds: float = 3.0
    """The server's real round clock (GAP_ROUND_SECONDS): players simulate the 120 s of thinking and
    wait out the real deadline when their simulated time is up, so it is short."""
    think_seconds: float = 30.0
    """Players' mean simulated thinking time per question (about four questions per 120 s round)."""
    replay: float = 1.0
    """Records of the base model's own curriculum mixed into every training set, per record of the
    theta = 0.8 set (the same records for every set). Trained on the game's data alone, the model
    forgot what it knew: kept data holds only the questions it got wrong, so its answers drift to
    those (docs/lab.md, "Replay"). 0 trains on each set alone."""


SIZES: dict[str, LabSize] = {
    "ci": LabSize(
        recipe=Recipe(scenes=240, steps=300, batch_size=16),
        game_scenes=60,
        players=12,
        sessions_per_player=3,
        concurrency=12,
        test_scenes=40,
        lora_steps=40,
        lora_batch=8,
        lora_lr=2e-3,
    ),
    "full": LabSize(
        recipe=Recipe(scenes=1200, steps=3000, batch_size=16, history_share=0.1),
        game_scenes=300,
        players=60,
        sessions_per_player=6,
        concurrency=30,
        test_scenes=150,
        lora_steps=150,
        lora_batch=8,
        lora_lr=2e-3,
    ),
}


@dataclass
class Stages:
    """Wall and CPU seconds of each stage, for the report."""

    times: dict[str, dict[str, float]] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        console.rule(f"[bold]gap lab[/bold]: {name}")
        wall, cpu = time.monotonic(), time.process_time()
        yield
        spent = {"wall_s": round(time.monotonic() - wall, 1), "cpu_s": round(time.process_time() - cpu, 1)}
        self.times[name] = spent
        console.print(f"[green]done[/green] {name}: {spent['wall_s']} s wall, {spent['cpu_s']} s CPU")


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """GAP_* settings for the commands run in this process (each reads its settings afresh)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def serving(env: dict[str, str], log: Path, *, timeout_s: float = 300.0) -> Iterator[str]:
    """`gap serve` in a subprocess on a free port; yields its base URL once /readyz answers 200."""
    port = _free_port()
    command = [sys.executable, "-c", "from gap.cli import main; main()", "serve", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise GapError(f"gap serve exited with {process.returncode}; its log: {log}")
            try:
                if httpx.get(f"{url}/readyz", timeout=5.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise GapError(f"gap serve was not ready within {timeout_s:g} s; its log: {log}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_items(scenes: Sequence[world.Scene], images: Path, seed: int) -> list[dict[str, Any]]:
    """One question of every type per fresh scene (where the type has one), with its true answer."""
    rng = random.Random(f"gap.lab.test:{seed}")
    items = []
    for scene in scenes:
        for qtype in world.QUESTION_TYPES:
            if not world.questions(scene, qtype):
                continue
            question = world.sample_question(scene, qtype, rng)
            items.append(
                {
                    "id": f"test-{qtype}-{scene.scene_id}",
                    "question": question.text,
                    "reference": question.answer,
                    "image": str((images / f"{scene.scene_id}.png").resolve()),
                    "image_id": scene.scene_id,
                    "qtype": qtype,
                    "set": "test",
                }
            )
    return items


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@dataclass
class Collected:
    """What the game produced: the play log, the kept records per theta and the truth behind them."""

    log: PlayLog
    turns: dict[str, PlayedTurn]
    scenes: dict[str, world.Scene]
    heldout: set[str]
    records: dict[float, list[Record]] = field(default_factory=dict)

    def truth(self, record: Record) -> tuple[PlayedTurn, str] | None:
        """The played turn behind ``record`` and its question's true answer (None if unknown)."""
        turn = self.turns.get(record.provenance.turn_ids[0]) if record.provenance.turn_ids else None
        if turn is None:
            return None
        question = world.parse(self.scenes[turn.scene_id], turn.question)
        return (turn, question.answer) if question is not None else None

    def trains(self, record: Record) -> bool:
        """Whether a record's player may train (the held-out players' questions are test items)."""
        found = self.truth(record)
        return found is not None and found[0].player_id not in self.heldout

    def in_content_order(self, records: Sequence[Record]) -> list[Record]:
        """``records`` sorted by scene and conversation. An export lists turns in the order they
        were asked, which concurrent players interleave differently on every run (and names images
        by ids new on every run); the trainer's seeded shuffle of another order is another model."""

        def content(record: Record) -> tuple[str, list[tuple[str, str]]]:
            found = self.truth(record)
            return (found[0].scene_id if found else record.image, [(m.role, m.text) for m in record.messages])

        return sorted(records, key=content)

    def precision(self, records: Sequence[Record]) -> float | None:
        """Share of ``records`` whose model answer was really wrong (against the world's truth)."""
        judged = [found for r in records if (found := self.truth(r)) is not None]
        return sum(not turn.model_right for turn, _ in judged) / len(judged) if judged else None


def players_clock(database_url: str, log: PlayLog, round_seconds: float) -> dict[str, Any]:
    """Set the stored turns' ``elapsed_s`` to the players' simulated clock, at the server's scale;
    returns how far the server's clock ran past the players' sleeps (the requests' latency, in ms).

    The server's clock is real time, so it carries each request's latency: fitted on it, the player
    model's prior (and with it which answers clear theta, in `gap quality fit` and `gap data
    export` alike) would change from run to run with the machine's load. The players' clock is the
    truth of when they asked, and it repeats.
    """
    from sqlalchemy import select, update

    from gap.db.engine import make_engine, make_sessionmaker, transaction
    from gap.db.models import Turn

    simulated = {t.turn_id: t.elapsed_s * round_seconds / SIMULATED_ROUND_S for t in log.turns}
    engine = make_engine(database_url)
    try:
        with transaction(make_sessionmaker(engine)) as db:
            server = dict(db.execute(select(Turn.id, Turn.elapsed_s)).tuples().all())
            played = [turn_id for turn_id in server if turn_id in simulated]
            if played:  # an ORM bulk update by primary key: one executemany
                db.execute(update(Turn), [{"id": i, "elapsed_s": simulated[i]} for i in played])
    finally:
        engine.dispose()
    late = pd.Series([1000 * (server[i] - simulated[i] * CLOCK_SHARE) for i in played], dtype=float)
    return {
        "turns": len(played),
        "unplayed": len(server) - len(played),
        "cut_rounds": log.cut_rounds,
        "latency_ms": {
            name: round(float(late.quantile(q)), 1) if played else None
            for name, q in (("p50", 0.5), ("p95", 0.95), ("max", 1.0))
        },
    }


def _export(directory: Path, records: Sequence[Record], name: str) -> Path:
    """``records`` as a sharegpt export through `gap data export --records` (the real path)."""
    source = directory / f"{name}.records.jsonl"
    write_records(source, list(records))
    out = directory / name
    run_gap(["data", "export", "--format", "sharegpt", "--records", str(source), "--out", str(out)])
    return out


def random_records(scenes: Sequence[world.Scene], images: Path, n: int, seed: int) -> list[Record]:
    """The random baseline: ``n`` template questions on the game's images with true answers (no game)."""
    rng = random.Random(f"gap.lab.random:{seed}")
    out: list[Record] = []
    while len(out) < n:
        scene = rng.choice(list(scenes))
        qtype = rng.choice(world.QUESTION_TYPES)
        if not world.questions(scene, qtype):
            continue
        question = world.sample_question(scene, qtype, rng)
        out.append(
            Record(
                id=f"random-{len(out):05d}",
                image=str((images / f"{scene.scene_id}.png").resolve()),
                image_id=scene.scene_id,
                messages=(Message("user", question.text), Message("assistant", question.answer)),
                provenance=Provenance(source="gap-lab-random"),
            )
        )
    return out


def replay_records(
    recipe: Recipe, scenes: Sequence[world.Scene], images: Path, n: int, seed: int
) -> list[Record]:
    """``n`` records of the base model's curriculum, drawn on the game's images: what the model was
    trained on, replayed beside new data so fine-tuning does not unlearn it."""
    records = curriculum(recipe, scenes, images)
    random.Random(f"gap.lab.replay:{seed}").shuffle(records)
    return [
        replace(record, id=f"replay-{index:05d}", provenance=Provenance(source="gap-lab-replay"))
        for index, record in enumerate(records[:n])
    ]


def oracle_records(collected: Collected, n: int, seed: int) -> list[Record]:
    """The oracle filter: flagged answers that were really wrong, with a correction that is right."""
    kept = []
    for record in collected.records[0.0]:
        found = collected.truth(record)
        if found is None or not collected.trains(record):
            continue
        turn, truth = found
        if not turn.model_right and world.is_right(turn.qtype, record.answer, truth):
            kept.append(record)
    random.Random(f"gap.lab.oracle:{seed}").shuffle(kept)
    return kept[:n]


def adversarial_items(collected: Collected, trained: set[tuple[str, str]]) -> list[dict[str, Any]]:
    """Held-out players' kept questions (theta 0.8), with the world's true answer as reference."""
    items: dict[str, dict[str, Any]] = {}
    for record in collected.records[MAIN_THETA]:
        found = collected.truth(record)
        if found is None or collected.trains(record):
            continue
        turn, truth = found
        key = (turn.scene_id, " ".join(turn.question.lower().split()))
        if key in trained:
            continue
        items.setdefault(
            f"adv-{turn.scene_id}-{len(items)}",
            {
                "question": turn.question,
                "reference": truth,
                "image": record.image,
                "image_id": turn.scene_id,
                "qtype": turn.qtype,
                "set": "adversarial",
                "key": key,
            },
        )
    unique: dict[tuple[str, str], dict[str, Any]] = {}
    for item_id, item in items.items():
        unique.setdefault(item.pop("key"), {"id": item_id, **item})
    return list(unique.values())


def _train(base: Path, data: Path, out: Path, size: LabSize, seed: int) -> Path:
    run_gap(
        [
            "train",
            "--model",
            str(base),
            "--data",
            str(data),
            "--out",
            str(out),
            "--max-steps",
            str(size.lora_steps),
            "--batch-size",
            str(size.lora_batch),
            "--learning-rate",
            str(size.lora_lr),
            "--lora-dropout",
            "0",
            "--precision",
            "fp32",
            "--seed",
            str(seed),
            "--max-pixels",
            str(size.recipe.canvas**2),
            "--set",
            "warmup_ratio=0.05",
            "--set",
            f"save_steps={size.lora_steps + 1}",
        ]
    )
    for checkpoint in out.glob("checkpoint-*"):
        for path in sorted(checkpoint.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        checkpoint.rmdir()
    return out


def _evaluate(base: Path, adapter: Path | None, items: Path, out: Path) -> dict[str, float]:
    """`gap eval answer` + `gap eval score --metric exact-match`; the per-item scores by id."""
    command = ["eval", "answer", "--model", f"transformers:{base}", "--data", str(items), "--out", str(out)]
    command += ["--batch-size", "32", "--max-new-tokens", "4"]
    if adapter is not None:
        command += ["--adapter", str(adapter)]
    run_gap(command)
    run_gap(["eval", "score", str(out), "--metric", METRIC])
    scores: dict[str, float] = {}
    for line in (out / f"scores-{METRIC}.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        scores[str(row["id"])] = float(row["score"] or 0.0)
    return scores


def run_lab(
    size_name: SizeName, out: Path, *, seed: int = 0, cache: Path | None = None, threads: int = 1
) -> dict[str, Any]:
    """Run the loop of size ``size_name`` into ``out`` and write its report; returns report.json's data."""
    import torch

    from gap.lab.report import build_report, write_report

    if size_name not in SIZES:
        raise InputError(f"unknown size {size_name!r}; expected one of {', '.join(SIZES)}")
    size = SIZES[size_name]
    torch.set_num_threads(threads)  # more threads spin against each other on a shared machine
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages()
    started = time.monotonic()

    with stages.stage("world"):
        game_scenes = world.draw_scenes(size.game_scenes, seed=seed)
        test_scenes = world.draw_scenes(size.test_scenes, seed=500_000 + seed)
        images = out / "world" / "images"
        manifest = world.write_images(game_scenes, images)
        test_images = out / "world" / "test-images"
        world.write_images(test_scenes, test_images)
        tests = test_items(test_scenes, test_images, seed)
        console.print(
            f"{len(game_scenes)} game scenes, {len(tests)} test questions on {len(test_scenes)} scenes"
        )

    with stages.stage("base models (cached by recipe)"):
        base, base_b = build_bases(
            [size.recipe, replace(size.recipe, family=FAMILY_B)], cache, threads=threads
        )
        console.print(f"base {FAMILY_A}: {base}\nbase {FAMILY_B}: {base_b}")

    game = out / "game"
    env = {
        "GAP_DATA_DIR": str(game),
        "GAP_DATABASE_URL": f"sqlite:///{game / 'gap.sqlite3'}",
        "GAP_MODEL": f"transformers:{base}",
        "GAP_MODEL_ADAPTER": "",
        "GAP_MAX_NEW_TOKENS": "4",
        "GAP_ROUND_SECONDS": str(size.round_seconds),
        "GAP_SEED": str(seed),
        "GAP_RATE_SIGNUPS": "100000/minute",
        "GAP_RATE_QUESTIONS": "100000/minute",
        "GAP_WORKER": "false",
        "GAP_LOG_LEVEL": "WARNING",
        "OMP_NUM_THREADS": str(threads),
    }
    with _environment(env):
        with stages.stage("game: import images, serve, play"):
            game.mkdir(parents=True, exist_ok=True)
            run_gap(["db", "upgrade"])
            run_gap(["images", "import", str(manifest)])
            players = population(size.players, seed)
            with serving(env, game / "serve.log") as url:
                log = asyncio.run(
                    play(
                        url,
                        game_scenes,
                        players,
                        sessions_per_player=size.sessions_per_player,
                        concurrency=size.concurrency,
                        seed=seed,
                        think_seconds=size.think_seconds,
                        # players sleep their simulated thinking at the real clock's scale, so the
                        # server's clock tracks the players' (players_clock measures how well)
                        think_time_s=size.think_seconds
                        * size.round_seconds
                        / SIMULATED_ROUND_S
                        * CLOCK_SHARE,
                    )
                )
            log.write(game / "play.jsonl")
            console.print(f"{len(log.turns)} turns played by {len(players)} players")

        with stages.stage("quality fit and exports"):
            clock = players_clock(env["GAP_DATABASE_URL"], log, size.round_seconds)
            run_gap(["turns", "export", str(game / "turns.parquet")])
            run_gap(["quality", "fit", str(game / "turns.parquet"), "--out", str(out / "fit")])
            heldout = {
                p.player_id for i, p in enumerate(players) if i % size.heldout_every == size.heldout_every - 1
            }
            collected = Collected(
                log=log,
                turns={t.turn_id: t for t in log.turns},
                scenes={s.scene_id: s for s in game_scenes},
                heldout=heldout,
            )
            exports = out / "exports"
            fitted = pd.read_parquet(out / "fit" / "turns.parquet")
            posteriors = fitted.loc[
                (fitted["pool"] == "untainted") & (fitted["verdict"] == "wrong"), "p_wrong"
            ]
            for theta in THETAS:
                folder = exports / f"db-theta-{theta:g}"
                # theta must lie in (0, 1); every posterior is positive, so 1e-9 keeps every Wrong
                value = theta or UNFILTERED
                if not (posteriors >= value).any():  # `gap data export` refuses an empty set
                    collected.records[theta] = []
                    continue
                run_gap(
                    ["data", "export", "--format", "sharegpt", "--theta", str(value), "--out", str(folder)]
                )
                collected.records[theta] = collected.in_content_order(read_records(folder))

    with stages.stage("training sets"):
        sets: dict[str, list[Record]] = {}
        for theta in THETAS:
            sets[f"theta-{theta:g}"] = [r for r in collected.records[theta] if collected.trains(r)]
        budget = len(sets[f"theta-{MAIN_THETA:g}"])
        sets["random"] = random_records(game_scenes, images, budget, seed)
        sets["oracle"] = oracle_records(collected, budget, seed)
        replayed = replay_records(size.recipe, game_scenes, images, round(size.replay * budget), seed)
        folders = {
            name: _export(exports, [*records, *replayed], name) for name, records in sets.items() if records
        }
        trained = {
            (collected.truth(r)[0].scene_id, " ".join(r.question.lower().split()))  # type: ignore[index]
            for name, records in sets.items()
            if name.startswith("theta")
            for r in records
        }
        adversarial = adversarial_items(collected, trained)
        items_file = _write_jsonl(out / "eval" / "items.jsonl", tests + adversarial)
        console.print(
            f"training sets: {', '.join(f'{k} {len(v)}' for k, v in sets.items())}, each with "
            f"{len(replayed)} replayed curriculum records; {len(adversarial)} adversarial questions held out"
        )

    runs: dict[str, dict[str, float]] = {}
    with stages.stage("train (LoRA) and evaluate"):
        for family, model in ((FAMILY_A, base), (FAMILY_B, base_b)):
            runs[base_run(family)] = _evaluate(model, None, items_file, out / "eval" / base_run(family))
        for name, folder in folders.items():
            adapter = _train(base, folder, out / "runs" / name, size, seed)
            runs[name] = _evaluate(base, adapter, items_file, out / "eval" / name)
        main = f"theta-{MAIN_THETA:g}"
        if main in folders:
            adapter = _train(base_b, folders[main], out / "runs" / f"{main}-{FAMILY_B}", size, seed)
            runs[f"{main}-{FAMILY_B}"] = _evaluate(
                base_b, adapter, items_file, out / "eval" / f"{main}-{FAMILY_B}"
            )
            run_gap(
                [
                    "eval",
                    "compare",
                    str(out / "eval" / "base"),
                    str(out / "eval" / main),
                    "--metric",
                    METRIC,
                    "--out",
                    str(out / "eval" / "compare"),
                ]
            )

    with stages.stage("report"):
        items = {row["id"]: row for row in tests + adversarial}
        data = build_report(
            size_name=size_name,
            seed=seed,
            size=asdict(size),
            weak_types=size.recipe.weak_types,
            items=items,
            runs=runs,
            sets={**{name: len(records) for name, records in sets.items()}, "replay": len(replayed)},
            collected=collected,
            players=players,
            fit_summary=json.loads((out / "fit" / "summary.json").read_text(encoding="utf-8")),
            true_effects=true_effects(log, round_seconds=SIMULATED_ROUND_S),
            clock=clock,
            turns_table=game / "turns.parquet",
            base_info={FAMILY_A: recipe_info(base), FAMILY_B: recipe_info(base_b)},
            base_answers={
                family: {item.id: item.answer for item in read_answers(out / "eval" / base_run(family))}
                for family in (FAMILY_A, FAMILY_B)
            },
            stages=stages.times,
            wall_s=time.monotonic() - started,
        )
        write_report(data, out)
    return data
