"""What the host must know of each layer before its metrics run, read for all layers at once.

A metric pass decides on the host: whether the samples are finite (else ``NonFiniteError``), the
power-of-two scale of extreme magnitudes, which rows are labelled and how many classes there are
(the shapes of the one-hot and centroid tensors), whether all points are identical (the indices
are then undefined). Read layer by layer, each would be a host sync on an accelerator, so the
count of syncs would grow with the number of layers. :func:`gather_facts` computes every layer's
flags on its device and brings them, with a host copy of the labels, to the host in one transfer
(:func:`repdiag.functional._device.fetch`). Labels are small (n int64 per layer), so one copy of
them per table is cheaper than a sync per ``torch.unique``: the label bookkeeping (classes, codes,
sizes, the stratified split) is then done on the host and its results travel back without a sync.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..functional._labelled import identical_rows
from ..functional._device import fetch
from ..functional._precision import _max_abs, compute_dtype
from .._validation import nonfinite_count
from ._registry import LayerData

__all__ = ["LayerFacts", "gather_facts", "float_samples"]


@dataclass(frozen=True)
class LayerFacts:
    """Host values of one layer view: non-finite count and largest magnitude of its samples, its
    labels (None without labels) and whether all its rows are identical (None without labels)."""

    bad: int
    max_abs: float
    labels: np.ndarray | None
    identical: bool | None


def float_samples(data: LayerData) -> Tensor:
    """The view's samples as floats (integer buffers as float32)."""
    x = data.samples
    assert x is not None
    return x if x.is_floating_point() else x.float()


def gather_facts(views: Sequence[LayerData], *, labels: bool) -> list[LayerFacts | None]:
    """:class:`LayerFacts` of each view with samples (None for the others), in one transfer for
    all of them (one per device). ``labels``: also the labels and the all-identical flag."""
    parts: list[Tensor] = []
    which: list[tuple[int, bool]] = []
    for i, d in enumerate(views):
        if d.samples is None or d.samples.shape[0] == 0:
            continue
        x = float_samples(d)
        y = d.labels if labels else None
        parts += [nonfinite_count(x), _max_abs(x.to(compute_dtype(x.dtype)))]
        if y is not None:
            parts += [y, identical_rows(x)]
        which.append((i, y is not None))
    got = fetch(*parts) if parts else []
    out: list[LayerFacts | None] = [None] * len(views)
    at = 0
    for i, has in which:
        bad, m = int(got[at][0]), float(got[at + 1][0])
        if has:
            out[i] = LayerFacts(bad, m, got[at + 2], bool(got[at + 3][0]))
            at += 4
        else:
            out[i] = LayerFacts(bad, m, None, None)
            at += 2
    return out


def known_index(facts: LayerFacts, device: torch.device) -> tuple[Tensor, np.ndarray] | None:
    """The labelled rows (indices on ``device``, and their labels on the host) when some but not
    all rows are labelled; None when all are or none is."""
    if facts.labels is None:
        return None
    known = facts.labels >= 0
    if known.all() or not known.any():
        return None
    from ..functional._device import to_device

    return to_device(np.flatnonzero(known).astype(np.int64), device), facts.labels[known]
