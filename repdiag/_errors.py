"""Exceptions and warnings raised by repdiag.

Every error a user can cause is a :class:`RepdiagError` subclass whose message says what was
expected, what arrived and what to do, in that order::

    {name} must be {expected}; got {what arrived}. {what to do}

(:func:`expected_error` builds it). Undefined results (one class, constant activations) are
NaN plus a :class:`RepdiagWarning`, never an exception.
"""

from __future__ import annotations

import warnings

__all__ = [
    "RepdiagError",
    "ShapeError",
    "ConfigError",
    "UnknownOptionError",
    "LayerNotFoundError",
    "NonFiniteError",
    "CheckpointError",
    "DataError",
    "DistributedError",
    "RepdiagWarning",
    "warn_undefined",
    "expected_error",
    "did_you_mean",
]


class RepdiagError(Exception):
    """Base class of every error repdiag raises for bad input or bad configuration."""


class ShapeError(RepdiagError, ValueError):
    """A tensor has the wrong number of dimensions or mismatching sizes."""


class ConfigError(RepdiagError, ValueError):
    """An option has a value outside its allowed range or set."""


class UnknownOptionError(ConfigError, TypeError):
    """A keyword option no function of repdiag takes (a TypeError too, as Python's own)."""


class LayerNotFoundError(RepdiagError, KeyError):
    """A requested layer name or pattern matches no module of the model."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class NonFiniteError(RepdiagError, ValueError):
    """Activations hold NaN or Inf where a finite value is required."""


class CheckpointError(RepdiagError, ValueError):
    """A checkpoint cannot be read, or does not fit the model."""


class DataError(RepdiagError, ValueError):
    """A data source cannot be read or has the wrong shape."""


class DistributedError(RepdiagError, RuntimeError):
    """Ranks disagree (different layer sets) or a collective timed out."""


class RepdiagWarning(UserWarning):
    """A result is undefined (NaN) or was computed under a stated caveat."""


def warn_undefined(what: str, why: str, *, stacklevel: int = 3) -> None:
    """Warn that ``what`` is undefined (NaN) and say ``why``."""
    warnings.warn(f"{what} is undefined (NaN): {why}", RepdiagWarning, stacklevel=stacklevel)


def did_you_mean(name: object, choices: "list[str] | tuple[str, ...]") -> str:
    """`` Did you mean 'x'?`` for the closest of ``choices`` to ``name`` (difflib), else ``""``."""
    import difflib

    if not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    return f" Did you mean {', '.join(map(repr, close))}?" if close else ""


def expected_error(name: str, expected: str, got: str, todo: str = "", cls: type[RepdiagError] | None = None
                   ) -> RepdiagError:
    """The error (``cls``, default :class:`ConfigError`) of the template ``{name} must be
    {expected}; got {got}. {todo}``, to raise."""
    return (cls or ConfigError)(f"{name} must be {expected}; got {got}.{(' ' + todo) if todo else ''}")
