"""Built-in metrics from the streaming statistics (computed on the full activation tensor)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ._registry import LayerData, Pending, Row, register_metric


@register_metric("sparsity", needs=("stats",), default=True, meaning="fraction of zero entries")
def _sparsity(data: LayerData) -> Iterator[Row]:
    """Element sparsity: fraction of all activation entries with |a| <= eps (eps = attach's sparsity_eps)."""
    s = data.stats
    total = s.entries_per_unit * s.units
    yield {"value": s.zeros.sum().to(torch.float64) / total, "n": s.samples}  # to the host with the table


@register_metric("dead_units", needs=("stats",), default=True,
                 meaning="fraction of units never non-zero", better="lower")
def _dead_units(data: LayerData) -> Iterator[Row]:
    """Fraction of units (channels) that were zero on every entry of every sample seen."""
    s = data.stats
    yield {"value": (s.zeros == s.entries_per_unit).sum().to(torch.float64) / s.units, "n": s.samples}


@register_metric("mean", needs=("stats",), default=True, meaning="mean activation")
def _mean(data: LayerData) -> Iterator[Row]:
    """Mean activation over units of each unit's running mean (over all entries)."""
    s = data.stats
    yield {"value": s.mean.mean(), "n": s.samples}


@register_metric("std", needs=("stats",), default=True, meaning="activation std (mean over units)")
def _std(data: LayerData) -> Iterator[Row]:
    """Mean over units of each unit's standard deviation (population, over all entries)."""
    s = data.stats
    std = s.std()
    value = std.mean()
    # NaN (non-finite activations, or no entries) warns when the value reaches the host
    yield {"value": Pending(value, ((value.isnan(), f"std of layer {data.layer!r} is undefined (NaN): "
                                                    "non-finite activations or no entries"),)), "n": s.samples}


@register_metric("nonfinite", needs=("stats",), default=True, meaning="maps holding NaN/Inf", better="lower")
def _nonfinite(data: LayerData) -> Iterator[Row]:
    """Number of (sample, unit) maps holding a NaN or Inf (entries for 2-D activations)."""
    s = data.stats
    yield {"value": s.nonfinite.sum().to(torch.float64), "n": s.samples}
