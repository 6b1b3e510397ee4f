"""Built-in similarity and dimension metrics on the buffered samples.

``effective_rank`` and ``participation_ratio`` per layer; ``cka_adjacent`` (model scope): linear
CKA between each recorded layer and the one before it in forward order. Layers' reservoirs make the
same choices when they see the same number of rows per batch (``reduce="mean"`` or
``"flatten"``), so their rows belong to the same inputs. :func:`cka_between_runs` compares the same
layer of two recorders fed the same inputs.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pandas as pd

from .._errors import RepdiagWarning
from ..functional import effective_rank, linear_cka, participation_ratio
from ..tables import make_table
from ._plugin_clustering import layer_samples, on_layer
from ._registry import LayerData, Row, register_metric

__all__ = ["cka_between_runs"]


@register_metric("effective_rank", needs=("samples",), meaning="effective rank")
def _effective_rank(data: LayerData) -> Iterator[Row]:
    """Effective rank exp(H(p)) of the centred samples' singular values (Roy & Vetterli 2007)."""
    x = layer_samples(data, "effective_rank")
    with on_layer(data.layer, "effective_rank"):
        v = effective_rank(x) if x.shape[0] >= 2 else _too_few(x.shape[0])
    yield {"value": v, "n": x.shape[0]}


@register_metric("participation_ratio", needs=("samples",), meaning="participation ratio")
def _participation_ratio(data: LayerData) -> Iterator[Row]:
    """Participation ratio (sum l)^2 / sum l^2 of the samples' covariance eigenvalues."""
    x = layer_samples(data, "participation_ratio")
    with on_layer(data.layer, "participation_ratio"):
        v = participation_ratio(x) if x.shape[0] >= 2 else _too_few(x.shape[0])
    yield {"value": v, "n": x.shape[0]}


def _too_few(n: int) -> float:
    from .._errors import warn_undefined

    warn_undefined("the spectrum", f"it needs at least 2 samples; got {n}")
    return float("nan")


@register_metric("cka_adjacent", needs=("model",), scope="model", meaning="linear CKA with the previous layer")
def _cka_adjacent(data: LayerData, debiased: bool = False) -> Iterator[Row]:
    """Linear CKA between each layer's samples and the previous layer's (same inputs)."""
    layers: list[LayerData] = sorted(data.extra.get("layers", []), key=lambda d: d.depth)
    for prev, cur in zip(layers, layers[1:]):
        if prev.samples is None or cur.samples is None:
            continue
        row: Row = {"layer": cur.layer, "module": cur.module, "depth": cur.depth, "n": cur.samples.shape[0],
                    "reference": prev.layer, "debiased": bool(debiased)}
        if prev.samples.shape[0] != cur.samples.shape[0]:
            warnings.warn(f"cka_adjacent of layer {cur.layer!r} is undefined (NaN): {prev.layer!r} kept "
                          f"{prev.samples.shape[0]} rows and {cur.layer!r} {cur.samples.shape[0]}; rows must "
                          "belong to the same inputs (use reduce='mean').", RepdiagWarning, stacklevel=3)
            yield {**row, "value": float("nan")}
            continue
        x = layer_samples(prev, "cka_adjacent")
        y = layer_samples(cur, "cka_adjacent")
        with on_layer(cur.layer, "cka_adjacent"):
            v = linear_cka(x, y.to(x.device), debiased=debiased)
        yield {**row, "value": v}


def cka_between_runs(a: Any, b: Any, *, layers: list[str] | None = None, debiased: bool = False) -> pd.DataFrame:
    """Linear CKA between the same layer of two recorders that were fed the same inputs.

    Parameters
    ----------
    a, b : Recorder
        Recorders (from :func:`repdiag.attach`) with the same layer names, fed the same batches in
        the same order with the same ``seed`` and ``max_samples`` (so their reservoirs keep the
        same inputs).
    layers : list of str, optional
        Layers to compare (default: those both recorded).
    debiased : bool
        Use the debiased HSIC estimator.

    Returns
    -------
    DataFrame
        A tidy table: ``run`` is ``a.run``, metric ``cka_runs``, columns ``other_run`` (``b.run``)
        and ``debiased``.
    """
    names = layers if layers is not None else [n for n in a.layers if n in set(b.layers)]
    rows: list[Row] = []
    depth = {d.layer: d for d in a.layer_data()}
    for name in names:
        xa, _ = a.samples(name)
        xb, _ = b.samples(name)
        if xa.shape[0] != xb.shape[0]:
            warnings.warn(f"cka_runs of layer {name!r} is undefined (NaN): the runs kept {xa.shape[0]} and "
                          f"{xb.shape[0]} rows; feed both the same inputs.", RepdiagWarning, stacklevel=2)
            v = float("nan")
        else:
            with on_layer(name, "cka_runs"):
                v = float(linear_cka(layer_samples(_as_data(name, xa), "cka_runs"),
                                     layer_samples(_as_data(name, xb), "cka_runs").to(xa.device), debiased=debiased))
        d = depth.get(name)
        rows.append({"run": a.run, "layer": name, "module": d.module if d else None, "depth": d.depth if d else -1,
                     "metric": "cka_runs", "value": v, "n": xa.shape[0], "other_run": b.run, "debiased": debiased})
    return make_table(rows)


def _as_data(name: str, x: Any) -> LayerData:
    return LayerData(name, "", -1, samples=x)
