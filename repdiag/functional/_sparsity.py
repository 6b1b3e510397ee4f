"""Sparsity of (post-activation) representations: element, channel, per-sample, dead units.

An entry counts as zero when ``|x| <= eps`` (``eps = 0``: exact zeros, as after a ReLU). Tensors
with more than two dimensions are read as ``(n_samples, channels, *positions)``: the functions
work on the full map, before any spatial reduction (reduce first and a channel's zeros are lost).

Reference: Potgieter, Mouton, Davel, *Impact of Batch Normalization on Convolutional Network
Representations*, arXiv 2501.14441 (which channel-sparsity reading the paper uses is uncertain;
both are here).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._errors import ConfigError, ShapeError, warn_undefined
from .._validation import check_choice, check_nonneg_float, check_samples, describe

__all__ = [
    "sparsity",
    "element_sparsity",
    "channel_sparsity",
    "sample_sparsity",
    "dead_units",
    "histogram_quantiles",
]


def _maps(x: Any, name: str = "x") -> Tensor:
    """``x`` as a float tensor of shape ``(n, channels, *positions)`` (at least 2-D)."""
    if not isinstance(x, Tensor):
        x = torch.as_tensor(x)
    if x.ndim < 2:
        raise ShapeError(f"{name} must have shape (n_samples, channels, *positions); got {tuple(x.shape)}. "
                         "Add a feature axis: x[:, None].")
    if x.shape[0] == 0:
        raise ShapeError(f"{name} must hold at least one sample; got {describe(x)}.")
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def _is_zero(x: Tensor, eps: float) -> Tensor:
    eps = check_nonneg_float(eps, "eps")
    return x.abs() <= eps if eps > 0 else x == 0


def sparsity(x: Tensor, *, eps: float = 0.0) -> Tensor:
    """Fraction of entries with ``|x| <= eps``, per column.

    Parameters
    ----------
    x : Tensor of shape (n_samples, n_features)
    eps : float, default 0

    Returns
    -------
    Tensor of shape (n_features,), dtype and device of ``x``; ``sparsity(x).mean()`` is the element
    sparsity. Always defined (n_samples >= 1).

    Examples
    --------
    >>> sparsity(torch.tensor([[0.0, 1.0], [0.0, 0.0], [2.0, 3.0]]))
    tensor([0.6667, 0.3333])
    """
    x = check_samples(x, "x")
    return _is_zero(x, eps).sum(dim=0).to(x.dtype) / x.shape[0]


def element_sparsity(x: Tensor, *, eps: float = 0.0) -> Tensor:
    """Fraction of all entries of ``x`` (any shape, at least one entry) with ``|x| <= eps``.

    ``s = #{entries: |x| <= eps} / numel(x)``. Returns a 0-d tensor in ``x``'s dtype and device.

    Examples
    --------
    >>> element_sparsity(torch.tensor([[0.0, 1.0], [0.0, 0.0]]))
    tensor(0.7500)
    """
    t = x if isinstance(x, Tensor) else torch.as_tensor(x)
    if t.numel() == 0:
        raise ShapeError(f"x must hold at least one entry; got {describe(t)}.")
    t = t if t.is_floating_point() else t.to(torch.get_default_dtype())
    return _is_zero(t, eps).sum().to(t.dtype) / t.numel()


def channel_sparsity(x: Tensor, *, eps: float = 0.0, reading: str = "entries") -> Tensor:
    """Per-channel sparsity of maps ``x`` of shape ``(n_samples, channels, *positions)``.

    Two readings of the paper's "channel sparsity":

    - ``"entries"``: ``s_c = #{(i, p): |x[i, c, p]| <= eps} / (n * P)``, the fraction of zero
      entries of channel c over samples and positions. Its mean over channels equals
      :func:`element_sparsity`.
    - ``"maps"``: ``s_c = #{i: |x[i, c, p]| <= eps for all p} / n``, the fraction of samples whose
      whole map of channel c is zero.

    Both agree for 2-D input (one position). Returns ``(channels,)`` in ``x``'s dtype and device.

    Examples
    --------
    >>> x = torch.tensor([[[0.0, 0.0], [1.0, 0.0]], [[0.0, 2.0], [0.0, 0.0]]])  # (2, 2, 2)
    >>> channel_sparsity(x), channel_sparsity(x, reading="maps")
    (tensor([0.7500, 0.7500]), tensor([0.5000, 0.5000]))
    """
    t = _maps(x)
    reading = check_choice(reading, "reading", ("entries", "maps"))
    z = _is_zero(t, eps).reshape(t.shape[0], t.shape[1], -1)
    if reading == "entries":
        return z.sum(dim=(0, 2)).to(t.dtype) / (z.shape[0] * z.shape[2])
    return z.all(dim=2).sum(dim=0).to(t.dtype) / z.shape[0]


def sample_sparsity(x: Tensor, *, eps: float = 0.0) -> Tensor:
    """Zero fraction of each sample's whole representation: ``s_i = #{|x[i, ...]| <= eps} / numel(x[i])``.

    ``x`` has shape ``(n_samples, ...)``; returns ``(n_samples,)`` in ``x``'s dtype and device. Its
    distribution over samples (mean, quantiles) is the per-sample sparsity reading.

    Examples
    --------
    >>> sample_sparsity(torch.tensor([[0.0, 1.0], [0.0, 0.0]]))
    tensor([0.5000, 1.0000])
    """
    t = _maps(x)
    return _is_zero(t, eps).reshape(t.shape[0], -1).sum(dim=1).to(t.dtype) / t[0].numel()


def dead_units(x: Tensor, *, eps: float = 0.0) -> Tensor:
    """Channels that are zero on every entry of every sample: bool tensor of shape ``(channels,)``.

    ``x`` has shape ``(n_samples, channels, *positions)``.

    Examples
    --------
    >>> dead_units(torch.tensor([[0.0, 1.0], [0.0, 0.0]]))
    tensor([ True, False])
    """
    t = _maps(x)
    return _is_zero(t, eps).transpose(0, 1).reshape(t.shape[1], -1).all(dim=1)


def histogram_quantiles(counts: Tensor, q: Tensor | float | list[float], *, low: float = 0.0,
                        high: float = 1.0) -> Tensor:
    """Quantiles of values binned into ``B`` bins whose centres are ``linspace(low, high, B)``.

    The q-quantile is the centre of the first bin where the cumulative count reaches
    ``q * total`` (the inverse of the empirical distribution function, as numpy's
    ``method="inverted_cdf"`` on the bin centres). ``counts`` has shape ``(B,)``; returns float64
    of the shape of ``q``, NaN where the histogram is empty.

    Examples
    --------
    >>> histogram_quantiles(torch.tensor([1, 0, 3]), [0.25, 0.5])
    tensor([0., 1.], dtype=torch.float64)
    """
    c = torch.as_tensor(counts)
    if c.ndim != 1 or c.numel() < 2:
        raise ShapeError(f"counts must be a 1-D histogram of at least 2 bins; got {describe(c)}.")
    try:
        qs = torch.as_tensor(q, dtype=torch.float64, device=c.device)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"q must be a number or a sequence of numbers in [0, 1]; got {describe(q)}.") from exc
    if not bool(((qs >= 0) & (qs <= 1)).all()):  # NaN fails both comparisons
        raise ConfigError(f"q must lie in [0, 1] (NaN is not a quantile); got {qs.tolist()}. Pass e.g. q=0.5.")
    if (c.is_floating_point() and not bool(torch.isfinite(c).all())) or not bool((c >= 0).all()):
        raise ConfigError(f"counts must be finite and >= 0 (a histogram); got min {float(c.min())}, "
                          f"max {float(c.max())}.")
    cum = torch.cumsum(c.to(torch.float64), 0)
    total = cum[-1]
    if float(total) <= 0:
        warn_undefined("histogram quantile", "the histogram is empty (all counts 0)")
        return torch.full_like(qs, float("nan"))
    centres = torch.linspace(low, high, c.numel(), dtype=torch.float64, device=c.device)
    idx = torch.searchsorted(cum, (qs * total).clamp(min=1e-12).reshape(-1)).clamp(max=c.numel() - 1)
    return centres[idx].reshape(qs.shape)
