"""The metric registry: built-ins register with a decorator, third parties through the
``repdiag.metrics`` entry-point group.

A metric plugin is a function ``fn(data: LayerData, **options) -> Iterable[Row]`` where a row is a
mapping with at least ``metric`` and ``value`` (and usually ``n``) plus any parameter columns.
The recorder fills ``run``, ``step``, ``layer``, ``module`` and ``depth``. A plugin declares what
it needs (see :data:`NEEDS`); when that is missing for a layer the plugin is skipped and the
reason is recorded (and warned once). It may also declare the shared pieces it reads from the
per-call plan (see :data:`SHARED` and ``repdiag/metrics/_plan.py``): ``table()`` then computes each
piece once per layer for all plugins (batched across layers where shapes agree), and hands it down
as ``data.plan``. A plugin that ignores ``data.plan`` works as before.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from .._errors import ConfigError, RepdiagError, RepdiagWarning

__all__ = [
    "NEEDS",
    "SHARED",
    "LayerData",
    "Metric",
    "Row",
    "Pending",
    "settle_rows",
    "register_metric",
    "unregister_metric",
    "get_metric",
    "available_metrics",
    "resolve_metrics",
    "default_metrics",
    "ENTRY_POINT_GROUP",
]

Row = dict[str, Any]
ENTRY_POINT_GROUP = "repdiag.metrics"

NEEDS: dict[str, str] = {
    "samples": "buffered (n, d) activation samples of the layer",
    "labels": "class labels stored beside the samples (pass labels to rec.step)",
    "stats": "streaming statistics accumulated on the full activation tensor",
    "model": "the model itself (model-wide metrics such as the BN gamma table)",
}

# Pieces of a layer that several metrics share, computed once per table() call by the plan
# (``data.plan``, a :class:`repdiag.metrics._plan.LayerPlan`); declaring them in ``needs`` lets
# the plan compute them for all layers together.
SHARED: dict[str, str] = {
    "groups": "the labelled samples (standardised when asked) with labels mapped to 0..k-1 and class sizes",
    "centroids": "class centroids of the labelled samples",
    "distance_sums": "per-sample sums of Euclidean distances to each class (one pass over distance blocks)",
    "kmeans": "the layer's k-means result (k = number of classes unless given)",
}


@dataclass
class LayerData:
    """What a plugin sees of one layer.

    Attributes
    ----------
    layer, module, depth : str, str, int
        Module path, class name and forward-order position.
    samples : Tensor or None
        Buffered samples, shape ``(n, d)``, on the activations' device.
    labels : Tensor or None
        int64 labels of shape ``(n,)`` beside ``samples``; ``-1`` marks a sample whose label was
        never given. Plugins see only labelled rows when they declare ``needs=("labels",)``.
    stats : object or None
        The layer's streaming statistics (:class:`repdiag.capture.StreamingStats`).
    model : torch.nn.Module or None
        The whole model, for model-wide metrics.
    module_ref : torch.nn.Module or None
        The module object of this layer.
    plan : LayerPlan or None
        The shared pieces of this layer for the current ``table()`` call (``data.plan.kmeans(...)``
        and so on; see ``repdiag/metrics/_plan.py``); None when a plugin is called on its own.
    """

    layer: str
    module: str
    depth: int
    samples: Tensor | None = None
    labels: Tensor | None = None
    stats: Any = None
    model: Any = None
    module_ref: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    plan: Any = None


@dataclass(frozen=True)
class Metric:
    """A registered metric plugin."""

    name: str
    fn: Callable[..., Iterable[Row]]
    needs: frozenset[str]
    description: str
    owner: str
    scope: str = "layer"  # "layer": called per layer; "model": called once with the model
    default: bool = False  # part of metrics="default"
    meaning: str = ""  # short axis label, e.g. "fraction of zero entries" (report y-axes)
    better: str = ""  # "higher", "lower", or "" when neither direction is better

    def missing(self, data: LayerData) -> str | None:
        """The reason this metric cannot run on ``data``, or None when it can."""
        if "samples" in self.needs and (data.samples is None or data.samples.shape[0] == 0):
            return "no buffered samples (the layer never ran on a due step)"
        if "labels" in self.needs:
            if data.labels is None or not _any_labelled(data):
                return "no labels (pass labels=... to rec.step)"
        if "stats" in self.needs and (data.stats is None or int(getattr(data.stats, "batches", 0)) == 0):
            return "no streaming statistics (the layer never ran on a due step)"
        if "model" in self.needs and data.model is None:
            return "no model"
        return None

    @property
    def shares(self) -> frozenset[str]:
        """The shared plan pieces (:data:`SHARED`) this metric declared in ``needs``."""
        return frozenset(n for n in self.needs if n in SHARED)

    def accepted(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` restricted to the parameters ``fn`` accepts (all of them for ``**kwargs``)."""
        sig = inspect.signature(self.fn)
        if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            return dict(options)
        return {k: v for k, v in options.items() if k in sig.parameters}

    def bound(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword parameters ``fn`` will run with: its defaults, overridden by ``options``."""
        defaults = {k: p.default for k, p in inspect.signature(self.fn).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        return {**defaults, **self.accepted(options)}

    def __call__(self, data: LayerData, **options: Any) -> list[Row]:
        """The plugin's rows, values as Python floats (see :func:`settle_rows`)."""
        return settle_rows([dict(r) for r in self.fn(data, **self.accepted(options))])


def _any_labelled(data: LayerData) -> bool:
    """Whether ``data`` has a labelled row: from the host copy of the labels the table's plan
    fetched (``data.plan.facts``), else by reading the labels (a host sync on an accelerator)."""
    facts = getattr(data.plan, "facts", None)
    if facts is not None and facts.labels is not None:
        return bool((facts.labels >= 0).any())
    assert data.labels is not None
    return bool((data.labels >= 0).any())


@dataclass(frozen=True)
class Pending:
    """A row value still on its device, with the warnings to give once it reaches the host:
    ``checks`` holds ``(flag, message)`` pairs, a 0-d bool tensor and the RepdiagWarning's text
    for when it is True. Built-in plugins yield these (or 0-d tensors) so that ``table()`` brings
    every value to the host in one transfer instead of one sync per row."""

    value: Tensor
    checks: tuple[tuple[Tensor, str], ...] = ()


def settle_rows(rows: list[Row], *, stacklevel: int = 3) -> list[Row]:
    """``rows`` with every tensor (0-d) or :class:`Pending` value replaced by a Python float, all
    fetched in one transfer per device, and the pending warnings given. Floats, None and other
    values pass through (third-party plugins yielding floats are unaffected)."""
    from ..functional._device import fetch

    slots: list[tuple[Row, Pending]] = []
    for r in rows:
        v = r.get("value")
        if isinstance(v, Tensor):
            slots.append((r, Pending(v)))
        elif isinstance(v, Pending):
            slots.append((r, v))
    if not slots:
        return rows
    flat = [p.value.reshape(()) for _, p in slots] + [f.reshape(()) for _, p in slots for f, _ in p.checks]
    got = fetch(*flat)
    at = len(slots)
    for i, (r, p) in enumerate(slots):
        r["value"] = float(got[i][0])
        for _, message in p.checks:
            if got[at][0]:
                warnings.warn(message, RepdiagWarning, stacklevel=stacklevel)
            at += 1
    return rows


_REGISTRY: dict[str, Metric] = {}
_ENTRY_POINTS_LOADED = False
_BUILTINS_LOADED = False



def _owner(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def register_metric(
    name: str,
    *,
    needs: Sequence[str] = (),
    description: str | None = None,
    scope: str = "layer",
    default: bool = False,
    meaning: str = "",
    better: str = "",
) -> Callable[[Callable[..., Iterable[Row]]], Callable[..., Iterable[Row]]]:
    """Decorator registering ``fn`` as metric ``name``.

    ``meaning`` is a short label of what the value is (report y-axes); ``better`` says which
    way is better: ``"higher"``, ``"lower"`` or ``""`` (neither: a property, not a score).

    Raises
    ------
    RepdiagError
        If ``name`` is already registered (the message names both owners), or ``needs`` holds
        an unknown requirement.
    """
    bad = [n for n in needs if n not in NEEDS and n not in SHARED]
    if bad:
        raise ConfigError(f"unknown requirement(s) {bad} for metric {name!r}; choose from "
                          f"{sorted(NEEDS)} and the shared pieces {sorted(SHARED)}.")
    if scope not in ("layer", "model"):
        raise ConfigError(f"scope must be 'layer' or 'model'; got {scope!r}.")
    if better not in ("higher", "lower", ""):
        raise ConfigError(f"better must be 'higher', 'lower' or ''; got {better!r} for metric {name!r}.")

    def deco(fn: Callable[..., Iterable[Row]]) -> Callable[..., Iterable[Row]]:
        if name in _REGISTRY:
            raise RepdiagError(
                f"metric {name!r} is already registered by {_REGISTRY[name].owner}; "
                f"{_owner(fn)} cannot register it again. Pick another name."
            )
        # the docstring's first paragraph, on one line
        desc = description or " ".join((inspect.getdoc(fn) or "").strip().split("\n\n")[0].split())
        _REGISTRY[name] = Metric(name, fn, frozenset(needs), desc, _owner(fn), scope, default, meaning, better)
        return fn

    return deco


def unregister_metric(name: str) -> None:
    """Remove metric ``name`` (for tests and interactive redefinition)."""
    _REGISTRY.pop(name, None)


def _load_builtins() -> None:
    """Import every ``repdiag/metrics/_plugin_*.py`` module; each registers its metrics."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    import importlib
    import pkgutil

    from .. import metrics as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_plugin_"):
            importlib.import_module(f"{pkg.__name__}.{info.name}")


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()  # importing the module registers its metrics
        except Exception as exc:  # noqa: BLE001 - a broken third-party plugin must not break repdiag
            import warnings

            from .._errors import RepdiagWarning

            warnings.warn(f"metric plugin entry point {ep.name!r} ({ep.value}) failed to load: {exc}",
                          RepdiagWarning, stacklevel=2)
            continue
        if isinstance(obj, Metric) and obj.name not in _REGISTRY:
            _REGISTRY[obj.name] = obj


def _all() -> Mapping[str, Metric]:
    _load_builtins()
    _load_entry_points()
    return _REGISTRY


def available_metrics() -> dict[str, Metric]:
    """All registered metrics by name (built-ins and entry points), sorted."""
    return dict(sorted(_all().items()))


def default_metrics() -> list[str]:
    """Names of the metrics ``metrics="default"`` selects (those registered with ``default=True``)."""
    return [n for n, m in available_metrics().items() if m.default]


def get_metric(name: str) -> Metric:
    """The metric registered as ``name``; an unknown name raises with the closest names."""
    reg = _all()
    if name not in reg:
        import difflib

        close = difflib.get_close_matches(name, list(reg), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"unknown metric {name!r}.{hint} `repdiag metrics` lists the {len(reg)} available.")
    return reg[name]


def resolve_metrics(metrics: str | Sequence[str] | None) -> list[Metric]:
    """Turn ``"default"``, ``"all"``, ``None`` (none) or a list of names into metrics."""
    if metrics is None:
        return []
    if isinstance(metrics, str):
        if metrics == "default":
            names: Sequence[str] = default_metrics()
        elif metrics == "all":
            names = list(available_metrics())
        else:
            names = [metrics]
    else:
        names = list(metrics)
    out: list[Metric] = []
    for n in names:
        if not isinstance(n, str):
            raise ConfigError(f"metric names must be strings; got {n!r}.")
        m = get_metric(n)
        if m not in out:
            out.append(m)
    return out


def iter_rows(metric: Metric, data: LayerData, options: Mapping[str, Any]) -> Iterator[Row]:
    """Rows of ``metric`` on ``data``, each tagged with the metric name when the plugin omits it.
    Values may still be tensors or :class:`Pending`: the caller settles them (:func:`settle_rows`),
    all rows of a table together."""
    for row in metric.fn(data, **metric.accepted(options)):
        row = dict(row)
        row.setdefault("metric", metric.name)
        yield row
