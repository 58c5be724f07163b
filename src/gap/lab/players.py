"""Simulated players with known reliabilities, playing the real game over HTTP.

A population mixes the kinds of ``gap simulate`` (:data:`gap.quality._simulate.KINDS`) with its
priors: careful players have a ~ Beta(18, 2) and b ~ Beta(1.5, 18.5), careless players judge at
random (a = b = 0.5), spammers always say Wrong (a = b = 1). Careful players also tire: the margin
of their a and 1 - b above chance shrinks by the factor ``1 - fatigue`` for every image already
played in the session (:func:`rates_at` is that truth), and their corrections are true with
probability ``correction_truth``.

:func:`play` signs every player up as a guest of a running ``gap serve``, plays whole sessions,
finds each round's scene by the hash of the image the game serves, asks template questions of the
types its own :class:`TypeBandit` thinks fool the model, and judges each answer against the scene's
truth. The player's clock is simulated (think times of ``think_seconds`` on average, a round of
``round_seconds``): nothing sleeps unless ``think_time_s > 0``. A player out of simulated time waits
for the server's real deadline to end the round, so a lab server runs with a short
``GAP_ROUND_SECONDS``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from gap.errors import GameServerError, InputError
from gap.lab.world import QUESTION_TYPES, Scene, is_right, png_bytes, questions, sample_question, wrong_answer
from gap.quality import PlayerModel
from gap.quality._simulate import KINDS

DEFAULT_MIX: dict[str, float] = {"careful": 0.87, "careless": 0.10, "spammer": 0.03}
"""``gap simulate``'s default shares (careless_rate 0.1, spammer_rate 0.03)."""
CAREFUL_A = (18.0, 2.0)
CAREFUL_B = (1.5, 18.5)
"""Beta priors of careful players' a and b, as in :mod:`gap.quality._simulate`."""
CAREFUL_FATIGUE = (0.0, 0.05)
"""Range of careful players' fatigue (uniform): at most a 5% loss of their edge per image."""
CORRECTION_TRUTH = {"careless": 0.5, "spammer": 0.0}
"""Careless players' corrections are true half the time, spammers' never (careful: Beta(18, 2))."""
RETRIES = 5
"""Attempts per request on connection errors and 429s before the run fails."""
FOCUS = {"intercept": 2.0, "time": 1.5, "fatigue": 0.15}
"""P(a question is sharp) = sigmoid(intercept - time * t - fatigue * n), t the share of the round
used, n the images already played in the session: a sharp question is of the type the player's
bandit picks, any other of a type drawn at random. Rushed and tired players probe worse, which is
the time and fatigue effect of the player model (equation 5); :func:`true_effects` measures it."""


@dataclass(frozen=True)
class PlayerSpec:
    player_id: str
    """The guest name the player signs up under (the server gives it its own id)."""
    kind: str
    a: float
    """P(says Wrong | the answer is wrong), on the first image of a session."""
    b: float
    """P(says Wrong | the answer is right), on the first image of a session."""
    fatigue: float
    """Share of the edge of a and 1 - b over chance lost per image played in a session."""
    correction_truth: float
    """P(a correction typed for a wrong answer is the true answer)."""


def _apportion(n: int, mix: Mapping[str, float]) -> list[str]:
    """``n`` kinds in the shares of ``mix`` (largest remainders), so small populations keep the mix."""
    total = sum(mix.values())
    exact = {kind: n * share / total for kind, share in mix.items()}
    counts = {kind: int(value) for kind, value in exact.items()}
    for kind in sorted(exact, key=lambda k: counts[k] - exact[k])[: n - sum(counts.values())]:
        counts[kind] += 1
    return [kind for kind in KINDS for _ in range(counts.get(kind, 0))]


def population(n: int, seed: int, *, mix: dict[str, float] | None = None) -> list[PlayerSpec]:
    """``n`` players in the shares of ``mix`` (kind -> weight; default :data:`DEFAULT_MIX`), in a
    seeded random order, with rates drawn from the kinds' priors."""
    mix = DEFAULT_MIX if mix is None else mix
    if n < 1:
        raise InputError(f"a population needs at least one player, got {n}")
    unknown = sorted(set(mix) - set(KINDS))
    if unknown or any(share < 0 for share in mix.values()) or sum(mix.values()) <= 0:
        raise InputError(f"mix must give non-negative shares of {', '.join(KINDS)}, got {mix}")
    rng = np.random.default_rng(seed)
    kinds = _apportion(n, mix)
    rng.shuffle(kinds)
    players = []
    for index, kind in enumerate(kinds):
        if kind == "careful":
            a, b = float(rng.beta(*CAREFUL_A)), float(rng.beta(*CAREFUL_B))
            fatigue, truth = float(rng.uniform(*CAREFUL_FATIGUE)), float(rng.beta(*CAREFUL_A))
        else:
            a = b = 0.5 if kind == "careless" else 1.0
            fatigue, truth = 0.0, CORRECTION_TRUTH[kind]
        players.append(PlayerSpec(f"lab-{seed}-p{index:03d}", kind, a, b, fatigue, truth))
    return players


def focus(t: float, image_index: int) -> float:
    """P(a question is sharp) at share ``t`` of the round on the ``image_index``-th image (1-based)."""
    eta = FOCUS["intercept"] - FOCUS["time"] * t - FOCUS["fatigue"] * max(0, image_index - 1)
    return 1.0 / (1.0 + math.exp(-eta))


def rates_at(player: PlayerSpec, image_index: int) -> tuple[float, float]:
    """The player's (a, b) on the ``image_index``-th image (1-based) of a session: the truth of fatigue."""
    keep = (1.0 - player.fatigue) ** max(0, image_index - 1)
    return 0.5 + (player.a - 0.5) * keep, 0.5 - (0.5 - player.b) * keep


@dataclass
class TypeBandit:
    """A player's sense of which question types fool the model: Thompson sampling on Beta(1, 1)
    priors, updated from the player's own verdicts (what it saw, right or not), kept across sessions."""

    fooled: dict[str, int] = field(default_factory=lambda: dict.fromkeys(QUESTION_TYPES, 0))
    asked: dict[str, int] = field(default_factory=lambda: dict.fromkeys(QUESTION_TYPES, 0))

    def choose(self, rng: random.Random, available: Sequence[str] = QUESTION_TYPES) -> str:
        """The available type with the highest draw from its posterior rate of fooling the model."""
        if not available:
            raise InputError("no question type to choose from")
        draws = {
            t: rng.betavariate(1 + self.fooled[t], 1 + self.asked[t] - self.fooled[t]) for t in available
        }
        return max(draws, key=lambda t: draws[t])

    def update(self, qtype: str, fooled: bool) -> None:
        self.asked[qtype] += 1
        self.fooled[qtype] += int(fooled)


@dataclass(frozen=True)
class PlayedTurn:
    turn_id: str
    player_id: str
    scene_id: str
    tainted: bool
    qtype: str
    question: str
    model_answer: str
    model_right: bool
    """Against the scene's truth (:func:`gap.lab.world.is_right`)."""
    verdict: str
    correction: str | None
    elapsed_s: float
    """The player's round clock when it asked (simulated seconds)."""
    image_index: int
    """The image's 1-based position in its session."""
    truth: str = ""
    """The question's true answer."""
    session_id: str = ""
    sharp: bool = True
    """Whether the question's type was the bandit's pick (see :data:`FOCUS`)."""


@dataclass
class PlayLog:
    turns: list[PlayedTurn] = field(default_factory=list)
    cut_rounds: int = 0
    """Rounds the server's real clock ended before the player's simulated one: each depends on the
    server's timing, so a run with any is not exactly repeatable (the lab leaves slack to avoid it)."""

    def to_frame(self) -> pd.DataFrame:
        columns = [f.name for f in fields(PlayedTurn)]
        return pd.DataFrame([asdict(turn) for turn in self.turns], columns=columns)

    def write(self, path: Path) -> None:
        """One JSON object per turn."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(asdict(turn)) + "\n" for turn in self.turns), encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> PlayLog:
        lines = path.read_text(encoding="utf-8").splitlines()
        return cls([PlayedTurn(**json.loads(line)) for line in lines if line.strip()])


def true_effects(log: PlayLog, *, round_seconds: float = 120.0) -> dict[str, Any]:
    """The player model (equation 5) fitted on the truth: the untainted turns of ``log``, success =
    the model's answer was wrong, t from the players' clock. A fit from verdicts should recover it."""
    frame = log.to_frame()
    frame = frame[~frame["tainted"].astype(bool)]
    if frame.empty:
        raise InputError("the play log has no untainted turns to fit the player model on")
    turns = pd.DataFrame(
        {
            "player_id": frame["player_id"],
            "image_id": frame["scene_id"],
            "elapsed_s": frame["elapsed_s"],
            "round_index": frame["image_index"],
        }
    )
    model = PlayerModel(round_seconds=round_seconds).fit(turns, ~frame["model_right"].astype(bool))
    return {
        "coef": {name: float(value) for name, value in model.coef_.items()},
        "se": {name: float(value) for name, value in model.se_.items()},
        "identified": model.identified_,
        "not_identified": model.not_identified_,
        "turns": len(turns),
        "focus": dict(FOCUS),
    }


class _Api:
    """The game's HTTP API for one player: retries connection errors and 429s, fails on a 5xx."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.headers: dict[str, str] = {}

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        """The response; a GET is retried on any transport error, a POST only where it was not sent."""
        retry = httpx.TransportError if method == "GET" else (httpx.ConnectError, httpx.ConnectTimeout)
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self.client.request(method, path, json=body, headers=self.headers)
            except retry as exc:
                if attempt == RETRIES:
                    raise GameServerError(
                        f"{method} {path}: cannot reach the game ({type(exc).__name__})"
                    ) from None
                await asyncio.sleep(0.1 * 2**attempt)
                continue
            except httpx.HTTPError as exc:
                raise GameServerError(f"{method} {path}: {type(exc).__name__}: {exc}") from None
            if response.status_code == 429 and attempt < RETRIES:
                await asyncio.sleep(min(float(response.headers.get("retry-after", 1)), 10.0))
                continue
            if response.status_code >= 500 or response.status_code == 429:
                raise GameServerError(f"{method} {path}: HTTP {response.status_code}: {response.text[:300]}")
            return response

    async def json(self, method: str, path: str, body: dict[str, Any] | None = None, *, ok: int = 200) -> Any:
        response = await self.call(method, path, body)
        if response.status_code != ok:
            raise GameServerError(f"{method} {path}: HTTP {response.status_code}: {response.text[:300]}")
        return response.json()


@dataclass
class _Player:
    spec: PlayerSpec
    api: _Api
    rng: random.Random
    scenes: Mapping[str, Scene]
    """Scenes by the SHA-256 of their PNG bytes."""
    round_seconds: float
    think_seconds: float
    think_time_s: float
    bandit: TypeBandit = field(default_factory=TypeBandit)
    turns: list[PlayedTurn] = field(default_factory=list)
    cut_rounds: int = 0

    async def session(self) -> None:
        started = await self.api.json("POST", "/api/sessions", ok=201)
        session_id, round_ = started["session_id"], started["round"]
        while round_ is not None:
            round_ = await self.round(session_id, round_)
        state = await self.api.json("GET", f"/api/sessions/{session_id}")
        if state["status"] != "finished":
            raise GameServerError(f"session {session_id} has no round to play but is {state['status']}")

    async def scene(self, image_url: str) -> Scene:
        image = await self.api.call("GET", image_url)
        if image.status_code != 200:
            raise GameServerError(f"GET {image_url}: HTTP {image.status_code}")
        scene = self.scenes.get(hashlib.sha256(image.content).hexdigest())
        if scene is None:
            raise GameServerError("the game served an image that is none of the lab's scenes")
        return scene

    async def round(self, session_id: str, round_: dict[str, Any]) -> dict[str, Any] | None:
        """Play one round; returns the next round (None when the session is over)."""
        scene = await self.scene(round_["image_url"])
        round_id, index, clock = round_["round_id"], int(round_["index"]), 0.0
        asked: set[str] = set()
        while True:
            think = self.rng.gammavariate(2.0, self.think_seconds / 2)
            available = [t for t in QUESTION_TYPES if any(q.text not in asked for q in questions(scene, t))]
            if clock + think > self.round_seconds or not available:
                return await self.wait_out(session_id, round_id)
            clock += think
            if self.think_time_s > 0:
                await asyncio.sleep(self.think_time_s * think / self.think_seconds)
            sharp = self.rng.random() < focus(clock / self.round_seconds, index)
            qtype = self.bandit.choose(self.rng, available) if sharp else self.rng.choice(available)
            question = sample_question(scene, qtype, self.rng, exclude=asked)
            asked.add(question.text)
            response = await self.api.call(
                "POST", f"/api/rounds/{round_id}/questions", {"question": question.text}
            )
            if response.status_code == 409:  # the server's clock ended the round first
                self.cut_rounds += 1
                return await self.wait_out(session_id, round_id)
            if response.status_code != 201:
                raise GameServerError(
                    f"asking in round {round_id}: HTTP {response.status_code}: {response.text}"
                )
            turn_id, answer = response.json()["turn_id"], str(response.json()["answer"])
            right = is_right(qtype, answer, question.answer)
            a, b = rates_at(self.spec, index)
            says_wrong = self.rng.random() < (b if right else a)
            correction = None
            if says_wrong:  # a false alarm's correction is wrong: the player believes the answer is
                true = not right and self.rng.random() < self.spec.correction_truth
                correction = question.answer if true else wrong_answer(question, self.rng)
            verdict = "wrong" if says_wrong else "correct"
            judged = await self.api.call(
                "POST", f"/api/turns/{turn_id}/verdict", {"verdict": verdict, "correction": correction}
            )
            if judged.status_code == 409:
                self.cut_rounds += 1
                return await self.wait_out(session_id, round_id)
            if judged.status_code != 200:
                raise GameServerError(f"judging turn {turn_id}: HTTP {judged.status_code}: {judged.text}")
            self.bandit.update(qtype, says_wrong)
            self.turns.append(
                PlayedTurn(
                    turn_id=turn_id,
                    player_id=self.spec.player_id,
                    scene_id=scene.scene_id,
                    tainted=scene.tainted,
                    qtype=qtype,
                    question=question.text,
                    model_answer=answer,
                    model_right=right,
                    verdict=verdict,
                    correction=correction,
                    elapsed_s=round(clock, 3),
                    image_index=index,
                    truth=question.answer,
                    session_id=session_id,
                    sharp=sharp,
                )
            )
            if says_wrong:
                next_round: dict[str, Any] | None = judged.json()["next_round"]
                return next_round

    async def wait_out(self, session_id: str, round_id: str) -> dict[str, Any] | None:
        """Wait for the server's deadline of ``round_id``; the session's next round (None at its end)."""
        while True:
            state = await self.api.json("GET", f"/api/sessions/{session_id}")
            current: dict[str, Any] | None = state["round"]
            if state["status"] == "finished" or current is None or current["round_id"] != round_id:
                return current
            await asyncio.sleep(min(max(float(current["seconds_left"]), 0.05), 1.0))


async def play(
    base_url: str,
    scenes: Sequence[Scene],
    players: Sequence[PlayerSpec],
    *,
    sessions_per_player: int,
    concurrency: int,
    seed: int,
    think_time_s: float = 0.0,
    round_seconds: float = 120.0,
    think_seconds: float = 20.0,
) -> PlayLog:
    """Every player signs up and plays ``sessions_per_player`` whole sessions, at most
    ``concurrency`` sessions at once; the log lists the judged turns player by player, in order."""
    if sessions_per_player < 1 or concurrency < 1:
        raise InputError(
            f"sessions_per_player and concurrency must be >= 1, got {sessions_per_player}, {concurrency}"
        )
    if round_seconds <= 0 or think_seconds <= 0 or think_time_s < 0:
        raise InputError("round_seconds and think_seconds must be > 0 and think_time_s >= 0")
    if len({p.player_id for p in players}) != len(players):
        raise InputError("player ids must be distinct")
    by_hash = {hashlib.sha256(png_bytes(scene)).hexdigest(): scene for scene in scenes}
    limit = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency + 2)
    timeout = httpx.Timeout(120.0, connect=10.0)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout) as client:

        async def run(spec: PlayerSpec) -> _Player:
            rng = random.Random(f"gap.lab.play:{seed}:{spec.player_id}")
            player = _Player(spec, _Api(client), rng, by_hash, round_seconds, think_seconds, think_time_s)
            async with limit:
                token = (await player.api.json("POST", "/api/auth/guest", {"name": spec.player_id}))["token"]
            player.api.headers = {"Authorization": f"Bearer {token}"}
            for _ in range(sessions_per_player):
                async with limit:
                    await player.session()
            return player

        try:
            async with asyncio.TaskGroup() as group:  # one failure cancels the other players
                tasks = [group.create_task(run(spec)) for spec in players]
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None
    played = [task.result() for task in tasks]
    return PlayLog([turn for p in played for turn in p.turns], sum(p.cut_rounds for p in played))
