"""The exceptions GAP raises; callers catch these, never a dependency's own types.

GapError
├── ConfigError            a setting or option is wrong or a needed extra is missing
├── InputError             bad input from a user or a file
│   └── ImageError         a file is not an image GAP can serve
├── NotFound               no such player, session, round, turn or image (for this player)
├── Conflict               the action does not fit the current state
│   ├── RoundOver          the round has ended (verdict, time-out or deadline)
│   ├── AwaitingVerdict    the previous answer has no verdict yet
│   ├── AlreadyJudged      the turn already has a verdict
│   └── NoImages           the pools hold no images to play
├── AuthError              missing, unknown or invalid credentials
├── StorageError           the object store (S3) failed: unreachable or refused
├── ModelError             the VLM backend failed
│   ├── ModelTimeout       the VLM took longer than its timeout
│   └── ModelUnavailable   the backend's circuit is open: not called at all
└── GameServerError        a game server that a client (the lab's players) talks to failed or refused
"""

from __future__ import annotations


class GapError(Exception):
    """Base class of every GAP error."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class ConfigError(GapError):
    """A setting or option is wrong, or a needed optional extra is not installed."""


class InputError(GapError):
    """Bad input from a user or a file."""


class ImageError(InputError):
    """A file is not an image GAP can serve."""


class StorageError(GapError):
    """The object store failed (unreachable, refused); a missing key is :class:`NotFound`."""


class NotFound(GapError):
    """No such object, or not one the caller may see."""


class Conflict(GapError):
    """The action does not fit the current state."""


class RoundOver(Conflict):
    """The round has ended."""


class AwaitingVerdict(Conflict):
    """The previous answer has no verdict yet."""


class AlreadyJudged(Conflict):
    """The turn already has a verdict."""


class NoImages(Conflict):
    """The image pools are empty."""


class AuthError(GapError):
    """Missing, unknown or invalid credentials."""


class ModelError(GapError):
    """The VLM backend failed."""


class ModelTimeout(ModelError):
    """The VLM took longer than its timeout."""


class ModelUnavailable(ModelError):
    """The backend failed too often lately; it is not called until ``retry_after`` seconds pass."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class GameServerError(GapError):
    """A game server that a client (the lab's players) talks to failed, refused or was out of reach."""
