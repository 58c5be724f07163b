"""The estimator shape shared by ``gap.quality`` (scikit-learn's, without depending on it).

``__init__`` only stores keyword-only hyperparameters; ``fit`` validates them against a declarative
``_parameter_constraints`` table, learns attributes that end in ``_`` and returns ``self``.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from gap.errors import ConfigError, GapError


class NotFittedError(GapError, AttributeError):
    """The estimator is used before ``fit`` has run."""


class ConvergenceWarning(UserWarning):
    """An iterative fit stopped at its iteration limit before meeting its tolerance."""


@dataclass(frozen=True, slots=True)
class Interval:
    """A numeric range a hyperparameter must lie in (``None`` leaves that side open)."""

    kind: type
    low: float | None
    high: float | None
    closed: str = "both"  # "both", "left", "right" or "neither"

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.kind is numbers.Integral and not isinstance(value, numbers.Integral):
            return False
        v = float(value)
        if np.isnan(v):
            return False
        if self.low is not None and (v < self.low or (v == self.low and self.closed in ("right", "neither"))):
            return False
        return not (
            self.high is not None
            and (v > self.high or (v == self.high and self.closed in ("left", "neither")))
        )

    def __str__(self) -> str:
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        name = "an int" if self.kind is numbers.Integral else "a float"
        return f"{name} in {left}{low}, {high}{right}"


Constraint = Interval | frozenset[object] | Callable[[object], bool] | None


class BaseEstimator:
    """``get_params``/``set_params``/``__repr__`` from the ``__init__`` signature, plus parameter checks."""

    _parameter_constraints: Mapping[str, list[Constraint]] = {}

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.name != "self"]

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Self:
        valid = set(self._param_names())
        for key, value in params.items():
            if key not in valid:
                raise ConfigError(f"{type(self).__name__} has no parameter {key!r}; valid: {sorted(valid)}")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        sig = inspect.signature(type(self).__init__)
        changed = [
            f"{name}={value!r}"
            for name, value in self.get_params().items()
            if not _same(value, sig.parameters[name].default)
        ]
        return f"{type(self).__name__}({', '.join(changed)})"

    def _validate_params(self) -> None:
        """Check every hyperparameter against ``_parameter_constraints``; raise naming the bad one."""
        for name, allowed in self._parameter_constraints.items():
            value = getattr(self, name)
            if any(_satisfies(value, c) for c in allowed):
                continue
            options = " or ".join(_describe(c) for c in allowed)
            raise ConfigError(f"{type(self).__name__}: {name} must be {options}, got {value!r}")

    def _check_is_fitted(self, attribute: str) -> None:
        if not hasattr(self, attribute):
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet; call fit(...) before using it."
            )


def _same(a: object, b: object) -> bool:
    try:
        return bool(a == b)
    except Exception:  # arrays and other objects with odd equality
        return a is b


def _satisfies(value: object, constraint: Constraint) -> bool:
    if constraint is None:
        return value is None
    if isinstance(constraint, Interval):
        return value in constraint
    if isinstance(constraint, frozenset):
        return isinstance(value, str | bool | int | float | None) and value in constraint
    return bool(constraint(value))


def _describe(constraint: Constraint) -> str:
    if constraint is None:
        return "None"
    if isinstance(constraint, frozenset):
        return "one of " + ", ".join(repr(v) for v in sorted(constraint, key=str))
    if isinstance(constraint, Interval):
        return str(constraint)
    return getattr(constraint, "__doc__", None) or "a valid value"
