"""Batch-to-batch distribution drift: Earth Mover distances between a layer's buffered
activations and a reference set of activations (Huang & Yu, CVPR 2020, arXiv 2001.02814).

Unlike the probe (``attach(..., probe=x)``), which feeds the same inputs at two times, this
compares two *different* samples of inputs, so the same-input coupling bound does not apply; the
rows are the distribution-level estimators only.

Reference: by default the first buffered samples this metric sees for a layer (for example the
first window of ``snapshot_every``) are kept, one bounded copy per layer, and every later
computation is compared with them: drift since the start. Pass ``reference={layer: tensor}`` in
``metric_options={"w1_drift": {...}}`` to compare with activations of your own (a validation
set, another run). :func:`reset_drift_reference` forgets kept references.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from .._errors import ConfigError, ShapeError, warn_undefined
from ..functional._transport import emd, first_moment_bound, sliced_wasserstein, wasserstein_1d
from ._registry import LayerData, Row, register_metric

__all__ = ["reset_drift_reference"]

_REFERENCES: weakref.WeakKeyDictionary[Any, Tensor] = weakref.WeakKeyDictionary()


def reset_drift_reference(module: Any = None) -> None:
    """Forget the kept ``"first"`` reference of ``module`` (a layer's module), or of every layer."""
    if module is None:
        _REFERENCES.clear()
    else:
        _REFERENCES.pop(module, None)


def _reference_for(data: LayerData, reference: Any) -> Tensor:
    assert data.samples is not None
    if isinstance(reference, Mapping):
        if data.layer not in reference:
            raise ConfigError(f"metric_options['w1_drift']['reference'] has no entry for layer {data.layer!r}; "
                              f"it has {sorted(reference)}. Give one (n, d) tensor per recorded layer.")
        ref = reference[data.layer]
        ref = ref if isinstance(ref, Tensor) else torch.as_tensor(ref)
        if ref.ndim != 2 or ref.shape[1] != data.samples.shape[1]:
            raise ShapeError(f"the reference of layer {data.layer!r} must have shape (n, {data.samples.shape[1]}) "
                             f"like its buffered samples; got {tuple(ref.shape)}.")
        return ref.to(data.samples.device)
    if reference != "first":
        raise ConfigError(f"metric_options['w1_drift']['reference'] must be 'first' or a mapping "
                          f"{{layer: (n, d) tensor}}; got {reference!r}.")
    key = data.module_ref if data.module_ref is not None else data.layer
    try:
        kept = _REFERENCES.get(key)
    except TypeError:  # a key that cannot be weakly referenced (a plain name): no kept reference
        kept = None
    if kept is None or kept.shape[1] != data.samples.shape[1] or kept.device != data.samples.device:
        kept = data.samples.detach().clone()
        try:
            _REFERENCES[key] = kept
        except TypeError:
            pass
    return kept


@register_metric("w1_drift", needs=("samples",),
                 description="EM distance (per-unit, sliced, exact W1) between the buffered activations and a "
                             "reference set: the first snapshot, or activations you give.",
                 meaning="W1 distance to the reference", better="lower")
def _w1_drift(data: LayerData, reference: Any = "first", n_projections: int = 128, seed: int = 0,
              exact_max: int = 512) -> Iterator[Row]:
    """EM distance between a layer's buffered activations and a reference set.

    Metrics: ``w1_drift_unit`` (mean per-unit W1), ``w1_drift_sliced`` (sliced W1),
    ``w1_drift`` (exact W1, when both sets have at most ``exact_max`` rows) and
    ``w1_drift_lower`` (first-moment lower bound ``||mean a - mean b||``), each with
    ``scale="raw"`` and ``scale="normalized"`` (divided by the mean row norm of the two sets).
    """
    x = data.samples
    assert x is not None
    ref = _reference_for(data, reference)
    n = x.shape[0]
    raw: dict[str, float] = {}
    if not bool(torch.isfinite(x).all() and torch.isfinite(ref).all()):
        warn_undefined(f"w1_drift of layer {data.layer!r}", "its activations hold NaN or Inf")
        names = ["w1_drift_unit", "w1_drift_sliced", "w1_drift_lower"]
        raw = dict.fromkeys(names + (["w1_drift"] if max(n, ref.shape[0]) <= exact_max else []), math.nan)
        scale = math.nan
    else:
        raw["w1_drift_unit"] = float(wasserstein_1d(x, ref).mean())
        raw["w1_drift_sliced"] = float(sliced_wasserstein(x, ref, n_projections, seed=seed))
        if max(n, ref.shape[0]) <= exact_max:
            raw["w1_drift"] = float(emd(x, ref))
        raw["w1_drift_lower"] = float(first_moment_bound(x, ref))
        scale = 0.5 * float(torch.linalg.vector_norm(x.float(), dim=1).mean()
                            + torch.linalg.vector_norm(ref.float(), dim=1).mean())
        if scale == 0.0:
            warn_undefined(f"scale-normalised w1_drift of layer {data.layer!r}", "its mean activation norm is 0")
            scale = math.nan
    for metric, value in raw.items():
        yield {"metric": metric, "value": value, "n": n, "scale": "raw"}
        yield {"metric": metric, "value": value / scale if scale == scale else math.nan, "n": n,
               "scale": "normalized"}
