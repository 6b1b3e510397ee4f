"""Normalization metrics: channels switched off (from the streaming zero counts) and the model-wide
gamma table of every affine normalization layer, BatchNorm, LayerNorm, GroupNorm, RMSNorm
(Frankle, Schwab, Morcos, ICLR 2021 studied BatchNorm)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .._errors import ConfigError
from ..bn._gamma import DEFAULT_QUANTILES, DEFAULT_THRESHOLDS, gamma_rows
from ._registry import LayerData, Row, register_metric


@register_metric("channels_off", needs=("stats",), default=True, meaning="fraction of channels off")
def _channels_off(data: LayerData, off_threshold: float = 0.99) -> Iterator[Row]:
    """Fraction of channels whose output is zero on >= 99% of entries (column threshold).

    A channel (unit) is *off* when ``zeros_c / entries_c >= threshold`` over every entry (sample
    and position) seen, which catches channels silenced by a negative beta as well as by a small
    gamma. Zero means ``|a| <= sparsity_eps`` (attach's option; exact zeros by default). Set the
    threshold with ``metric_options={"channels_off": {"off_threshold": 0.95}}``.
    Frankle et al., ICLR 2021, Sec. 5.
    """
    if isinstance(off_threshold, bool) or not isinstance(off_threshold, (int, float)) \
            or not math.isfinite(off_threshold) or not 0 < off_threshold <= 1:
        raise ConfigError(f"channels_off off_threshold must be a number in (0, 1]; got {off_threshold!r}.")
    s = data.stats
    frac = s.zeros.double() / float(s.entries_per_unit)
    off = (frac >= float(off_threshold) - 1e-12).double().mean()
    yield {"value": off, "n": s.samples, "threshold": float(off_threshold)}  # to the host with the table


@register_metric("gamma", needs=("model",), scope="model", default=True, meaning="norm-layer gamma / beta statistics")
def _gamma(data: LayerData, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
           reference: Mapping[str, Any] | None = None,
           quantiles: Sequence[float] = DEFAULT_QUANTILES) -> Iterator[Row]:
    """Gamma table of every affine normalization layer (BatchNorm, LayerNorm, GroupNorm, RMSNorm,
    each under its own ``module`` name): fraction of |gamma| < threshold, gamma and beta
    mean/std/quantiles (see repdiag.bn.gamma_table)."""
    yield from gamma_rows(data.model, thresholds, reference, quantiles)
