"""Input validation shared by every layer of repdiag (imports nothing else of repdiag but errors)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ._errors import ConfigError, NonFiniteError, ShapeError

__all__ = [
    "first_tensor",
    "check_samples",
    "check_labels",
    "check_same_features",
    "check_positive_int",
    "check_nonneg_float",
    "check_choice",
    "check_finite",
    "describe",
]


def describe(x: Any) -> str:
    """A short description of ``x`` for error messages."""
    if isinstance(x, Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)} on {x.device}"
    return f"{type(x).__name__} {x!r}" if not hasattr(x, "shape") else f"{type(x).__name__} of shape {x.shape}"


def check_samples(x: Any, name: str = "x", *, min_samples: int = 1) -> Tensor:
    """Return ``x`` as a floating ``(n_samples, n_features)`` tensor or raise :class:`ShapeError`.

    Integer and boolean tensors are promoted to the default float dtype; numpy arrays are accepted.
    """
    if not isinstance(x, Tensor):
        try:
            x = torch.as_tensor(x)
        except Exception as exc:  # noqa: BLE001 - any conversion failure is a user error
            raise ShapeError(
                f"{name} must be a tensor or array of shape (n_samples, n_features); got {describe(x)}."
            ) from exc
    if x.ndim != 2:
        hint = " Reduce conv maps first, e.g. x.mean(dim=(2, 3)), or flatten: x.flatten(1)." if x.ndim > 2 else (
            " Add a feature axis: x[:, None]." if x.ndim == 1 else "")
        raise ShapeError(f"{name} must have shape (n_samples, n_features); got {tuple(x.shape)}.{hint}")
    if x.shape[0] < min_samples:
        raise ShapeError(f"{name} must have at least {min_samples} sample(s); got {x.shape[0]}.")
    if not (x.is_floating_point() or x.is_complex()):
        x = x.to(torch.get_default_dtype())
    return x


def check_labels(labels: Any, n: int, name: str = "labels", *, device: torch.device | None = None) -> Tensor:
    """Return ``labels`` as an int64 ``(n,)`` tensor or raise :class:`ShapeError`."""
    if not isinstance(labels, Tensor):
        try:
            labels = torch.as_tensor(labels)
        except Exception as exc:  # noqa: BLE001
            raise ShapeError(f"{name} must be a 1-D tensor of {n} integer labels; got {describe(labels)}.") from exc
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ShapeError(
            f"{name} must be a 1-D tensor of {n} labels (one per sample); got shape {tuple(labels.shape)}."
            + (" Pass class indices, not one-hot rows: labels.argmax(1)." if labels.ndim == 2 else "")
        )
    if labels.is_floating_point() or labels.is_complex():
        raise ShapeError(f"{name} must hold integer class labels; got dtype {labels.dtype}. Use labels.long().")
    if device is not None and labels.device != device:
        labels = labels.to(device)
    return labels.long()


def check_same_features(a: Tensor, b: Tensor, names: tuple[str, str] = ("a", "b")) -> None:
    """Raise :class:`ShapeError` unless ``a`` and ``b`` have the same number of columns."""
    if a.shape[1] != b.shape[1]:
        raise ShapeError(
            f"{names[0]} and {names[1]} must have the same number of features; "
            f"got {a.shape[1]} and {b.shape[1]}."
        )


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` as int if it is an integer >= ``minimum`` else raise :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer >= {minimum}; got {value!r} ({type(value).__name__}).")
    if value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}; got {value}.")
    return value


def check_nonneg_float(value: Any, name: str) -> float:
    """Return ``value`` as float if it is a finite number >= 0 else raise :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a finite number >= 0; got {value!r}.")
    return float(value)


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices`` else raise :class:`ConfigError`."""
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}.")
    return str(value)


def check_finite(x: Tensor, what: str) -> None:
    """Raise :class:`NonFiniteError` if ``x`` holds NaN or Inf (this synchronises; call outside hooks)."""
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise NonFiniteError(
            f"{what} holds {bad} non-finite value(s) (NaN or Inf) out of {x.numel()}; the metric needs finite "
            "inputs. Check the training run for divergence (a lower learning rate, gradient clipping)."
        )


def first_tensor(obj: Any) -> Tensor | None:
    """The first tensor in ``obj``: itself, else the first found in a tuple/list or in a dict's
    values (insertion order), recursively; None when there is none. What a module produced, or
    what a batch's inputs start with."""
    if isinstance(obj, Tensor):
        return obj
    values = obj.values() if isinstance(obj, Mapping) else obj if isinstance(obj, (tuple, list)) else ()
    for o in values:
        t = first_tensor(o)
        if t is not None:
            return t
    return None
