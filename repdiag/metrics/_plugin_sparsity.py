"""Built-in sparsity readings from the streaming statistics (full tensor, before any reduction).

The foundation's ``sparsity`` (element sparsity) and ``dead_units`` live in ``_plugin_stats``;
these add the other readings of Potgieter, Mouton, Davel (arXiv 2501.14441): both channel
sparsity readings and the distribution over samples of each sample's zero fraction. An entry is
zero when ``|a| <= eps`` with attach's ``sparsity_eps``. NaN/Inf entries count as non-zero (the
``nonfinite`` metric counts them).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from .._errors import ConfigError
from ..functional import histogram_quantiles
from ._registry import LayerData, Row, register_metric


@register_metric("channel_sparsity_entries", needs=("stats",), meaning="mean per-channel zero fraction")
def _channel_sparsity_entries(data: LayerData) -> Iterator[Row]:
    """Mean over channels of each channel's fraction of zero entries (equals `sparsity` by construction)."""
    s = data.stats
    frac = s.zeros.to(torch.float64) / max(s.entries_per_unit, 1)
    yield {"value": frac.mean(), "n": s.samples}


@register_metric("channel_sparsity_maps", needs=("stats",), default=True,
                 meaning="fraction of all-zero channel maps")
def _channel_sparsity_maps(data: LayerData) -> Iterator[Row]:
    """Mean over channels of the fraction of samples whose whole map of that channel is zero."""
    s = data.stats
    frac = s.zero_maps.to(torch.float64) / max(s.samples, 1)
    yield {"value": frac.mean(), "n": s.samples}  # a 0-d tensor: to the host with the table's values


@register_metric("sample_sparsity_mean", needs=("stats",), default=True, meaning="mean per-sample zero fraction")
def _sample_sparsity_mean(data: LayerData) -> Iterator[Row]:
    """Mean over samples of each sample's zero fraction (from a 1001-bin histogram, +-0.0005)."""
    s = data.stats
    h = s.sample_zero_hist.to(torch.float64)
    centres = torch.linspace(0.0, 1.0, h.numel(), dtype=torch.float64, device=h.device)
    yield {"value": (h * centres).sum() / h.sum(), "n": s.samples}


@register_metric("sample_sparsity_quantile", needs=("stats",), meaning="per-sample zero fraction (quantile)")
def _sample_sparsity_quantile(data: LayerData, quantiles: Sequence[float] = (0.1, 0.5, 0.9)) -> Iterator[Row]:
    """Quantiles over samples of each sample's zero fraction (one row per `quantile`)."""
    qs = [float(q) for q in quantiles]
    if not qs or any(not 0.0 <= q <= 1.0 for q in qs):
        raise ConfigError(f"quantiles must be a non-empty list of numbers in [0, 1]; got {list(quantiles)!r}.")
    s = data.stats
    values = histogram_quantiles(s.sample_zero_hist, qs)
    for q, v in zip(qs, values):
        yield {"value": v, "n": s.samples, "quantile": q}
