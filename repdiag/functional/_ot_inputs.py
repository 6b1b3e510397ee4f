"""Argument checks and dtype rules shared by the Earth Mover kernels: sample matrices on one
device, the order ``p``, sample weights, and the float32/float64 compute dtype (half precision is
computed in float32)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .._errors import ConfigError, ShapeError
from .._validation import check_finite, check_samples, check_same_features, describe

__all__ = ["compute_dtype", "check_pair", "check_paired", "check_result", "check_p", "check_weights"]


def compute_dtype(*xs: Tensor) -> torch.dtype:
    """The promoted dtype of ``xs`` if float32 or float64, else float32."""
    dt = xs[0].dtype
    for x in xs[1:]:
        dt = torch.promote_types(dt, x.dtype)
    return dt if dt in (torch.float32, torch.float64) else torch.float32


def check_pair(a: Any, b: Any) -> tuple[Tensor, Tensor, torch.dtype]:
    """Validate two sample matrices; return them in a common compute dtype and the output dtype."""
    a = check_samples(a, "a")
    b = check_samples(b, "b")
    check_same_features(a, b)
    if a.device != b.device:
        raise ShapeError(f"a and b must be on the same device; got {a.device} and {b.device}. Move one: b.to(a.device).")
    if a.is_complex() or b.is_complex():
        raise ShapeError(f"a and b must be real; got {a.dtype} and {b.dtype}.")
    out_dtype = torch.promote_types(a.dtype, b.dtype)
    ct = compute_dtype(a, b)
    a, b = a.to(ct), b.to(ct)
    return a, b, out_dtype


def check_result(value: Tensor, a: Tensor, b: Tensor) -> None:
    """A non-finite result can only come from non-finite inputs: say which (one cheap check on
    the small result instead of two passes over the inputs)."""
    if not bool(torch.isfinite(value).all()):
        check_finite(a, "a")
        check_finite(b, "b")


def check_p(p: Any) -> float:
    """The order ``p`` of a Wasserstein distance as a float (a finite number >= 1)."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or p < 1:
        raise ConfigError(f"p must be a finite number >= 1 (1 for W1, 2 for W2); got {p!r}.")
    return float(p)


def check_weights(w: Any, n: int, name: str, device: torch.device) -> Tensor | None:
    """``None`` or normalised float64 weights ``(n,)`` on ``device``."""
    if w is None:
        return None
    if not isinstance(w, Tensor):
        try:
            w = torch.as_tensor(w)
        except Exception as exc:  # noqa: BLE001 - any conversion failure is a user error
            raise ShapeError(f"{name} must be a 1-D tensor of {n} sample weights; got {describe(w)}.") from exc
    if w.ndim != 1 or w.shape[0] != n:
        raise ShapeError(f"{name} must be a 1-D tensor of {n} sample weights (one per row); got shape {tuple(w.shape)}.")
    w = w.to(device=device, dtype=torch.float64)
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ConfigError(f"{name} must be finite and >= 0; got min {float(w.min())}. Pass non-negative weights.")
    total = float(w.sum())
    if total <= 0:
        raise ConfigError(f"{name} must have a positive sum; got {total}. Give at least one sample weight > 0.")
    return w / total


def check_paired(y_t: Any, y_t2: Any) -> tuple[Tensor, Tensor, torch.dtype]:
    """Validate one layer's outputs on the same inputs at two times (equal shapes, one device);
    return them in a common compute dtype and the output dtype."""
    y_t = check_samples(y_t, "y_t")
    y_t2 = check_samples(y_t2, "y_t2")
    if y_t.shape != y_t2.shape:
        raise ShapeError(
            f"y_t and y_t2 must be the same inputs' outputs at two times, with equal shapes; got "
            f"{tuple(y_t.shape)} and {tuple(y_t2.shape)}. Row i of both must come from input i."
        )
    if y_t.device != y_t2.device:
        raise ShapeError(f"y_t and y_t2 must be on the same device; got {y_t.device} and {y_t2.device}.")
    out_dtype = torch.promote_types(y_t.dtype, y_t2.dtype)
    ct = compute_dtype(y_t, y_t2)
    return y_t.to(ct), y_t2.to(ct), out_dtype
