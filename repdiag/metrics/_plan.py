"""One plan per ``table()`` call: what several metrics need of a layer is computed once.

:func:`run_plan` is the body of ``Recorder.compute``. It wraps every layer's data in a
:class:`LayerPlan` (``data.plan``), which computes each shared piece (:data:`SHARED`) on first use
and keeps it for the rest of the call: the finite check of the samples, the standardised copy,
the labels mapped to ``0..k-1`` with class sizes, the class centroids, the per-class distance sums
(silhouette's one pass over the distance blocks) and the k-means result. Before the plugins run,
k-means is computed for every layer whose metrics declare ``"kmeans"``, batched over layers of
equal shape, and the distance sums of every layer whose metrics declare ``"distance_sums"``, in
parallel over layers on the CPU (a thread per core, as ``torch.get_num_threads()`` allows).
Nothing outlives the call except the recorder's :class:`KMeansMemory`.

Host syncs (docs/metrics.md). What the host must decide on (finite checks, scales, labels, the
all-identical flag) is fetched for every layer in one transfer first (``_facts.py``); on an
accelerator the distance sums' near-duplicate budgets of all layers are read in one more; the
plugins then yield 0-d tensors, brought to the host together by :func:`settle_rows`. So the
number of syncs of a call does not grow with the number of layers (k-means convergence checks
aside).

Which k-means figure is which. ``kmeans_purity`` and ``kmeans_nmi`` of a layer's *first* analysis
in a recorder come from ``n_init`` k-means++ seedings (scikit-learn's procedure; equal to
``repdiag.functional.kmeans(x, k, n_init=n_init, seed=seed)``). Every *later* analysis of that
layer (a later ``table()`` or snapshot, same k, width and options) runs Lloyd from two starts
instead: the centres the previous analysis ended with (a warm start: representations move little
between snapshots, so it converges in a few iterations) and, when k is the number of classes, the
class means. The lower-inertia run is reported. Both are local minima of the same objective
chosen by the same unsupervised criterion, but the candidates differ from the first analysis',
so a later figure is not what a fresh ``KMeans(n_init=...)`` on the same buffers would give; it
usually reaches a lower inertia. ``KMeansMemory.clear()`` (``rec._plan_memory``) forgets the
centres.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

from .._errors import NonFiniteError, RepdiagError, RepdiagWarning
from .._validation import raise_nonfinite
from ..functional._clustering import (
    centroids,
    cluster_distance_sums,
    cluster_distance_sums_many,
    identical_rows,
    standardized,
    undefined_reason,
)
from ..functional._device import fetch, label_codes
from ..functional._kmeans import KMeansResult, kmeans_stack
from ..functional._precision import checked_rescaled, compute_dtype, scale_for
from ..tables import MODEL_LAYER
from ._facts import LayerFacts, float_samples, gather_facts, known_index
from ._registry import LayerData, Metric, Row, iter_rows, settle_rows

__all__ = ["Groups", "KMeansMemory", "LayerPlan", "layer_plan", "layer_samples", "on_layer", "run_plan"]

T = TypeVar("T")


@contextlib.contextmanager
def on_layer(layer: str, metric: str) -> Iterator[None]:
    """Re-raise kernel warnings and non-finite errors with the layer and metric named."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        except NonFiniteError as exc:
            raise NonFiniteError(f"metric {metric!r} on layer {layer!r}: {exc}") from exc
    for w in caught:
        if issubclass(w.category, RepdiagWarning):
            warnings.warn(f"{metric} of layer {layer!r}: {w.message}", RepdiagWarning, stacklevel=4)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def layer_samples(data: LayerData, metric: str) -> Tensor:
    """The layer's buffered samples, checked finite (a NonFiniteError names the layer), in their
    compute dtype at a safe power-of-two scale. Within ``table()`` the check and the scale use the
    values the plan fetched for all layers at once (``data.plan.facts``); on their own they cost
    one host sync."""
    x = float_samples(data)
    what = f"the buffered samples of layer {data.layer!r} (metric {metric!r})"
    facts = data.plan.facts if isinstance(data.plan, LayerPlan) else None
    if facts is None:
        (x,), _, _ = checked_rescaled([(x, what)])
        return x
    raise_nonfinite(facts.bad, x, what)
    x = x.to(compute_dtype(x.dtype))  # half -> float32 and a power-of-two rescale of extreme magnitudes (exact)
    s = scale_for(facts.max_abs)
    return x if s == 1.0 else x * (1.0 / s)


def standardize(x: Tensor) -> Tensor:
    """The standardised copy of samples :func:`layer_samples` checked (not checked again: no sync)."""
    return standardized(x)


@dataclass(frozen=True)
class Groups:
    """Labelled samples ``x`` (n, d), labels ``inverse`` in ``0..k-1``, class sizes ``counts`` (k,),
    and why the cluster indices are undefined (None when they are defined)."""

    x: Tensor
    inverse: Tensor
    counts: Tensor
    k: int
    why: str | None


class KMeansMemory:
    """The k-means centres each layer's last analysis ended with: the warm start of the next.

    One per recorder (``rec._plan_memory``), kept across ``reset()`` (snapshots reset the buffers),
    keyed by layer and ``(k, n_init, seed, standardize, width, dtype, device)``."""

    def __init__(self) -> None:
        self._centres: dict[tuple[str, tuple[Any, ...]], Tensor] = {}

    def get(self, layer: str, key: tuple[Any, ...]) -> Tensor | None:
        return self._centres.get((layer, key))

    def put(self, layer: str, key: tuple[Any, ...], centres: Tensor) -> None:
        self._centres[(layer, key)] = centres.detach()

    def clear(self) -> None:
        self._centres.clear()


class LayerPlan:
    """The shared pieces of one layer for one call; each computed on first use, then kept."""

    def __init__(self, data: LayerData, memory: KMeansMemory | None = None, facts: LayerFacts | None = None) -> None:
        self.data = data
        self.memory = memory
        self.facts = facts  # host values fetched for all layers at once (None: read when needed)
        self._pieces: dict[tuple[Any, ...], Any] = {}

    def _get(self, key: tuple[Any, ...], make: Callable[[], T]) -> T:
        if key not in self._pieces:
            self._pieces[key] = make()
        return self._pieces[key]

    def samples(self, metric: str) -> Tensor:
        """The samples, float and checked finite (once; the error names the first metric asking)."""
        return self._get(("samples",), lambda: layer_samples(self.data, metric))

    def x(self, standardize_: bool, metric: str) -> Tensor:
        """The samples, standardised per feature when asked (one copy per call)."""
        if not standardize_:
            return self.samples(metric)
        return self._get(("standardized",), lambda: standardize(self.samples(metric)))

    def groups(self, standardize_: bool, metric: str) -> Groups:
        def make() -> Groups:
            x = self.x(standardize_, metric)
            assert self.data.labels is not None
            f = self.facts
            if f is None or f.labels is None or f.identical is None:  # on its own: one host sync
                host, same = fetch(self.data.labels, identical_rows(x))
                identical = bool(same[0])
            else:
                host, identical = f.labels, f.identical  # all-identical is the same after standardising
            inverse, counts, k = label_codes(host, x.device)
            return Groups(x, inverse, counts, k, undefined_reason(x.shape[0], k, identical))

        return self._get(("groups", standardize_), make)

    def centroids(self, standardize_: bool, metric: str) -> Tensor:
        g = self.groups(standardize_, metric)
        return self._get(("centroids", standardize_), lambda: centroids(g.x, g.inverse, g.counts, g.k))

    def distance_sums(self, standardize_: bool, metric: str) -> Tensor:
        """``S[i, c]``: summed distances from sample i to the members of class c (float64, (n, k))."""
        g = self.groups(standardize_, metric)
        return self._get(("distance_sums", standardize_), lambda: cluster_distance_sums(
            g.x, torch.nn.functional.one_hot(g.inverse, g.k)))

    def kmeans_key(self, k: int, n_init: int, seed: int, standardize_: bool, metric: str) -> tuple[Any, ...]:
        x = self.x(standardize_, metric)
        return (int(k), int(n_init), int(seed), bool(standardize_), x.shape[1], x.dtype, x.device)

    def kmeans_starts(self, key: tuple[Any, ...], metric: str) -> Tensor | None:
        """Starting centres (r, k, d) of a later analysis, or None for the first (k-means++)."""
        prev = self.memory.get(self.data.layer, key) if self.memory is not None else None
        if prev is None:
            return None
        g = self.groups(key[3], metric)
        starts = [prev] + ([self.centroids(key[3], metric)] if g.k == key[0] else [])
        return torch.stack(starts)

    def set_kmeans(self, key: tuple[Any, ...], res: KMeansResult) -> None:
        self._pieces[("kmeans",) + key] = res
        if self.memory is not None:
            self.memory.put(self.data.layer, key, res.centers)

    def kmeans(self, k: int, n_init: int, seed: int, standardize_: bool, metric: str) -> KMeansResult:
        """k-means of the samples with ``k`` clusters (see the module docstring for the starts)."""
        key = self.kmeans_key(k, n_init, seed, standardize_, metric)
        if ("kmeans",) + key not in self._pieces:
            x = self.x(standardize_, metric)
            starts = self.kmeans_starts(key, metric)
            res = kmeans_stack(x[None], k, n_init=n_init, seeds=[seed], init=None if starts is None else starts[None])
            self.set_kmeans(key, KMeansResult(res.labels[0], res.centers[0], res.inertia[0]))
        return self._pieces[("kmeans",) + key]


def layer_plan(data: LayerData) -> LayerPlan:
    """``data.plan``, or a plan of its own for a plugin called outside ``table()``."""
    return data.plan if isinstance(data.plan, LayerPlan) else LayerPlan(data)


def _labelled(d: LayerData, memory: KMeansMemory | None) -> LayerData:
    """The view ``d`` restricted to labelled rows (with a plan of its own), or ``d`` itself when
    every row is labelled or none is (then the metrics needing labels are skipped). Which rows are
    labelled comes from the host copy of the labels (``d.plan.facts``)."""
    x, y = d.samples, d.labels
    if y is None or x is None:
        return d
    f = d.plan.facts
    if f is None or f.labels is None:
        known = y >= 0
        if bool(known.any()) and not bool(known.all()):
            return _view(d, x[known], y[known], memory)
        return d
    ki = known_index(f, x.device)
    if ki is None:
        return d
    idx = ki[0]
    return _view(d, x.index_select(0, idx), y.index_select(0, idx.to(y.device)), memory)


def _view(d: LayerData, x: Tensor | None, y: Tensor | None, memory: KMeansMemory | None) -> LayerData:
    out = LayerData(d.layer, d.module, d.depth, x, y, d.stats, d.model, d.module_ref, dict(d.extra))
    out.plan = LayerPlan(out, memory)
    return out


def _set_facts(views: Sequence[LayerData], labels: bool) -> None:
    for v, f in zip(views, gather_facts(views, labels=labels)):
        v.plan.facts = f


def _prefetch_kmeans(metrics: Sequence[Metric], views: Sequence[LayerData], opts: Callable[[Metric], dict[str, Any]]
                     ) -> None:
    """k-means of every layer a metric declaring ``"kmeans"`` will ask for, batched over layers of
    equal shape and kind of start. Layers whose pieces fail here are left to the plugins (which
    raise or warn with the metric named, as they would without the plan)."""
    todo: dict[tuple[Any, ...], list[tuple[LayerPlan, tuple[Any, ...], Tensor | None]]] = {}
    for m in metrics:
        if m.scope != "layer" or "kmeans" not in m.shares:
            continue
        b = m.bound(opts(m))
        for v in views:
            if m.missing(v) is not None:
                continue
            plan: LayerPlan = v.plan
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    g = plan.groups(bool(b.get("standardize", False)), m.name)
                    k = g.k if b.get("k") is None else int(b["k"])
                    if not 2 <= k <= g.x.shape[0]:
                        continue
                    key = plan.kmeans_key(k, int(b.get("n_init", 3)), int(b.get("seed", 0)),
                                          bool(b.get("standardize", False)), m.name)
                    if ("kmeans",) + key in plan._pieces:
                        continue
                    starts = plan.kmeans_starts(key, m.name)
            except RepdiagError:
                continue
            group = (key, tuple(g.x.shape), None if starts is None else starts.shape[0])
            if all(p is not plan for p, _, _ in todo.get(group, [])):
                todo.setdefault(group, []).append((plan, key, starts))
    for (key, _, _), items in todo.items():
        xs = torch.stack([p.groups(key[3], "kmeans").x for p, _, _ in items])
        starts = None if items[0][2] is None else torch.stack([s for _, _, s in items if s is not None])
        res = kmeans_stack(xs, key[0], n_init=key[1], seeds=[key[2]] * len(items), init=starts)
        for i, (p, kk, _) in enumerate(items):
            p.set_kmeans(kk, KMeansResult(res.labels[i], res.centers[i], res.inertia[i]))


def _prefetch_distance_sums(metrics: Sequence[Metric], views: Sequence[LayerData],
                            opts: Callable[[Metric], dict[str, Any]]) -> None:
    """The per-class distance sums of every layer a metric declaring ``"distance_sums"`` will ask
    for, computed together (in parallel over layers on the CPU). Layers whose pieces fail here,
    or whose indices are undefined, are left to the plugins."""
    todo: dict[tuple[int, bool], tuple[LayerPlan, Groups]] = {}
    for m in metrics:
        if m.scope != "layer" or "distance_sums" not in m.shares:
            continue
        std = bool(m.bound(opts(m)).get("standardize", False))
        for v in views:
            plan: LayerPlan = v.plan
            if m.missing(v) is not None or ("distance_sums", std) in plan._pieces or (id(plan), std) in todo:
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    g = plan.groups(std, m.name)
            except RepdiagError:
                continue
            if g.why is None:
                todo[(id(plan), std)] = (plan, g)
    if not todo:
        return
    items = list(todo.items())
    sums = cluster_distance_sums_many([(g.x, torch.nn.functional.one_hot(g.inverse, g.k)) for _, (_, g) in items])
    for ((_, std), (plan, _)), s in zip(items, sums):
        plan._pieces[("distance_sums", std)] = s


def run_plan(data: Sequence[LayerData], metrics: Sequence[Metric], metric_options: Mapping[str, Mapping[str, Any]],
             *, model: Any, memory: KMeansMemory | None) -> tuple[list[Row], list[tuple[str, str, str]]]:
    """Rows of ``metrics`` on ``data`` through one plan, and the (metric, layer, reason) skipped."""
    def opts(m: Metric) -> dict[str, Any]:
        return {**metric_options.get("*", {}), **metric_options.get(m.name, {})}

    full = [_view(d, d.samples, d.labels, memory) for d in data]
    need_labels = any("labels" in m.needs for m in metrics)
    if need_labels or any("samples" in m.needs or m.scope == "model" for m in metrics):
        _set_facts(full, need_labels)  # one host sync for every layer's checks and labels
    labelled = [_labelled(d, memory) for d in full] if need_labels else full
    partial = [v for v, d in zip(labelled, full) if v is not d]
    if partial:
        _set_facts(partial, True)  # the labelled rows' checks: one more sync, for all such layers
    _prefetch_kmeans([m for m in metrics if "labels" in m.needs], labelled, opts)
    _prefetch_kmeans([m for m in metrics if "labels" not in m.needs], full, opts)
    _prefetch_distance_sums([m for m in metrics if "labels" in m.needs], labelled, opts)
    _prefetch_distance_sums([m for m in metrics if "labels" not in m.needs], full, opts)
    rows: list[Row] = []
    skipped: list[tuple[str, str, str]] = []
    for m in metrics:
        if m.scope == "model":
            md = LayerData(MODEL_LAYER, type(model).__name__, -1, model=model, extra={"layers": full})
            reason = m.missing(md)
            if reason:
                skipped.append((m.name, MODEL_LAYER, reason))
                continue
            for r in iter_rows(m, md, opts(m)):
                r.setdefault("layer", MODEL_LAYER)
                r.setdefault("module", md.module)
                r.setdefault("depth", -1)
                rows.append(r)
            continue
        for d in labelled if "labels" in m.needs else full:
            reason = m.missing(d)
            if reason:
                skipped.append((m.name, d.layer, reason))
                continue
            for r in iter_rows(m, d, opts(m)):
                r.setdefault("layer", d.layer)
                r.setdefault("module", d.module)
                r.setdefault("depth", d.depth)
                rows.append(r)
    return settle_rows(rows, stacklevel=4), skipped  # every value to the host in one transfer
