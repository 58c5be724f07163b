"""Suspicious play from the database: per-player figures for :mod:`gap.quality._flags`, and the
keyed hash of sign-up IPs that the many-accounts flag compares (the IP itself is never stored)."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import statistics
from collections import defaultdict
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gap.config import Settings
from gap.db.models import GameSession, Player, Round, Turn
from gap.quality._flags import Flagged, FlagRules, PlayStats, flag_players

KEY_FILE = "ip-hash.key"


def ip_hash_key(settings: Settings) -> bytes:
    """``GAP_IP_HASH_KEY``, else a random key made once and kept in the data folder."""
    if settings.ip_hash_key:
        return settings.ip_hash_key.encode()
    path = Path(settings.data_dir) / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:  # exclusive create: two replicas starting together keep one key
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def ip_hash(key: bytes, ip: str | None) -> str | None:
    """HMAC-SHA256 of ``ip``: equal IPs give equal hashes, and without the key no IP can be
    recovered by hashing all 2^32 IPv4 addresses."""
    if not ip:
        return None
    return hmac.new(key, ip.encode(), hashlib.sha256).hexdigest()


def play_stats(db: Session) -> list[PlayStats]:
    """Every player with a verdict or a shared sign-up IP, with what the flags look at."""
    seconds: dict[str, list[float]] = defaultdict(list)
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    rows = db.execute(
        select(GameSession.player_id, Turn.verdict, Turn.answered_at, Turn.judged_at)
        .join(Round, Round.session_id == GameSession.id)
        .join(Turn, Turn.round_id == Round.id)
        .where(Turn.verdict.is_not(None))
    )
    for player_id, verdict, answered, judged in rows:
        counts[player_id][0] += 1
        counts[player_id][1] += verdict == "wrong"
        if answered is not None and judged is not None:
            seconds[player_id].append((judged - answered).total_seconds())
    per_ip = dict(
        db.execute(
            select(Player.signup_ip_hash, func.count())
            .where(Player.signup_ip_hash.is_not(None))
            .group_by(Player.signup_ip_hash)
        ).all()
    )
    shared = (
        select(Player.signup_ip_hash)
        .where(Player.signup_ip_hash.is_not(None))
        .group_by(Player.signup_ip_hash)
        .having(func.count() > 1)
    )
    judging = (
        select(GameSession.player_id)
        .join(Round, Round.session_id == GameSession.id)
        .join(Turn, Turn.round_id == Round.id)
        .where(Turn.verdict.is_not(None))
    )
    players = db.execute(  # subqueries, not id lists: no bound-parameter limit however many players
        select(Player.id, Player.name, Player.signup_ip_hash).where(
            Player.id.in_(judging) | Player.signup_ip_hash.in_(shared)
        )
    )
    return [
        PlayStats(
            player_id=pid,
            name=name,
            verdicts=counts[pid][0],
            wrong=counts[pid][1],
            timed=len(seconds[pid]),
            median_verdict_s=statistics.median(seconds[pid]) if seconds[pid] else None,
            accounts_on_ip=int(per_ip.get(ip, 0)) if ip else 0,
        )
        for pid, name, ip in players
    ]


def suspicious_players(db: Session, rules: FlagRules = FlagRules()) -> list[Flagged]:
    return flag_players(play_stats(db), rules)
