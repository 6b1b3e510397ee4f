"""Input validation shared by every layer of repdiag: one path, so every bad argument gets one
:class:`~repdiag.RepdiagError` of the template in ``_errors`` (expected, got, what to do) and no
plugin checks its own options. At import this module needs nothing of repdiag but the errors;
:func:`check_attach_args` reads the metric registry when it runs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ._errors import ConfigError, NonFiniteError, ShapeError, UnknownOptionError, did_you_mean, expected_error

__all__ = [
    "first_tensor",
    "check_samples",
    "check_labels",
    "check_dims",
    "check_same_features",
    "check_positive_int",
    "check_nonneg_float",
    "check_choice",
    "check_finite",
    "nonfinite_count",
    "raise_nonfinite",
    "describe",
    "check_seed",
    "check_attach_args",
    "check_metric_options",
]


def describe(x: Any) -> str:
    """A short description of ``x`` for error messages."""
    if isinstance(x, Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)} on {x.device}"
    return f"{type(x).__name__} {x!r}" if not hasattr(x, "shape") else f"{type(x).__name__} of shape {x.shape}"


def check_samples(x: Any, name: str = "x", *, min_samples: int = 1) -> Tensor:
    """Return ``x`` as a floating ``(n_samples, n_features)`` tensor or raise :class:`ShapeError`.

    Integer and boolean tensors are promoted to the default float dtype; numpy arrays are accepted.
    """
    if not isinstance(x, Tensor):
        try:
            x = torch.as_tensor(x)
        except Exception as exc:  # noqa: BLE001 - any conversion failure is a user error
            raise ShapeError(
                f"{name} must be a tensor or array of shape (n_samples, n_features); got {describe(x)}."
            ) from exc
    if x.ndim != 2:
        hint = " Reduce conv maps first, e.g. x.mean(dim=(2, 3)), or flatten: x.flatten(1)." if x.ndim > 2 else (
            " Add a feature axis: x[:, None]." if x.ndim == 1 else "")
        raise ShapeError(f"{name} must have shape (n_samples, n_features); got {tuple(x.shape)}.{hint}")
    if x.shape[0] < min_samples:
        raise ShapeError(f"{name} must have at least {min_samples} sample(s); got {x.shape[0]}.")
    if x.is_complex():
        raise ShapeError(f"{name} must hold real numbers; got dtype {x.dtype}. Pass {name}.real, {name}.abs(), or "
                         f"torch.view_as_real({name}).flatten(1).")
    if x.device.type == "meta":
        raise ShapeError(f"{name} must hold data; got {describe(x)}, which has none. Pass a materialised tensor.")
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    return x


def check_labels(labels: Any, n: int | None, name: str = "labels", *,
                 device: torch.device | None = None) -> Tensor:
    """Return ``labels`` as an int64 1-D tensor of ``n`` entries (any integer or bool dtype is
    accepted) or raise :class:`ShapeError`. ``n=None`` (``Recorder.step``) checks the shape only:
    the recorder compares the length with each layer's batch itself."""
    count = "one class index per sample" if n is None else f"{n} class indices, one per sample"
    if not isinstance(labels, Tensor):
        try:
            labels = torch.as_tensor(labels)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ShapeError(
                f"{name} must be a 1-D integer tensor ({count}); got {describe(labels)} that torch cannot read "
                f"as numbers ({exc}). Map class names to indices 0..k-1 first.") from exc
    if labels.ndim != 1 or (n is not None and labels.shape[0] != n) or labels.is_floating_point() \
            or labels.is_complex():
        raise ShapeError(
            f"{name} must be a 1-D integer tensor ({count}); got {labels.dtype} of shape {tuple(labels.shape)}."
            + (" Pass class indices, not one-hot rows: labels.argmax(1)." if labels.ndim == 2 else
               " Pass class indices: labels.long()." if labels.is_floating_point() else ""))
    if labels.device.type == "meta":
        raise ShapeError(f"{name} must hold data; got {describe(labels)}, which has none.")
    if device is not None and labels.device != device:
        labels = labels.to(device)
    return labels if labels.dtype == torch.int64 else labels.long()


def check_same_features(a: Tensor, b: Tensor, names: tuple[str, str] = ("a", "b")) -> None:
    """Raise :class:`ShapeError` unless ``a`` and ``b`` have the same number of columns."""
    if a.shape[1] != b.shape[1]:
        raise ShapeError(
            f"{names[0]} and {names[1]} must have the same number of features; "
            f"got {a.shape[1]} and {b.shape[1]}."
        )


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` as int if it is an integer >= ``minimum`` else raise :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer >= {minimum}; got {value!r} ({type(value).__name__}).")
    if value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}; got {value}.")
    return value


def check_nonneg_float(value: Any, name: str) -> float:
    """Return ``value`` as float if it is a finite number >= 0 else raise :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a finite number >= 0; got {value!r}.")
    return float(value)


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices`` else raise :class:`ConfigError`."""
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}."
                          + did_you_mean(value, choices))
    return str(value)


def check_finite(x: Tensor, what: str) -> None:
    """Raise :class:`NonFiniteError` if ``x`` holds NaN or Inf (this synchronises; call outside hooks).

    Code that checks several tensors, or has other values to bring to the host, counts with
    :func:`nonfinite_count` and raises with :func:`raise_nonfinite` after one transfer."""
    raise_nonfinite(int(nonfinite_count(x)), x, what)


def nonfinite_count(x: Tensor) -> Tensor:
    """The number of NaN and Inf entries of ``x``, a 0-d int64 tensor on its device (no sync)."""
    if not (x.is_floating_point() or x.is_complex()):
        return torch.zeros((), dtype=torch.int64, device=x.device)
    return (~torch.isfinite(x)).sum()


def raise_nonfinite(bad: int, x: Tensor, what: str) -> None:
    """:func:`check_finite`'s error for ``bad`` non-finite entries of ``x`` (nothing when 0)."""
    if bad:
        raise NonFiniteError(
            f"{what} holds {bad} non-finite value(s) (NaN or Inf) out of {x.numel()}; the metric needs finite "
            "inputs. Check the training run for divergence (a lower learning rate, gradient clipping)."
        )


def first_tensor(obj: Any) -> Tensor | None:
    """The first tensor in ``obj``: itself, else the first found in a tuple/list or in a dict's
    values (insertion order), recursively; None when there is none. What a module produced, or
    what a batch's inputs start with."""
    if isinstance(obj, Tensor):
        return obj
    values = obj.values() if isinstance(obj, Mapping) else obj if isinstance(obj, (tuple, list)) else ()
    for o in values:
        t = first_tensor(o)
        if t is not None:
            return t
    return None


_SEED_RANGE = (-(2 ** 63), 2 ** 64 - 1)  # what torch.Generator.manual_seed accepts


def check_seed(value: Any, name: str = "seed") -> int:
    """``value`` as an int seed (an integer in torch's seed range, not a bool) or raise :class:`ConfigError`."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise expected_error(name, "an integer", f"{type(value).__name__} {value!r}", f"Pass e.g. {name}=0.")
    v = int(value)
    if not _SEED_RANGE[0] <= v <= _SEED_RANGE[1]:
        raise expected_error(name, f"an integer in [-2**63, 2**64 - 1] (torch's seed range)", str(v),
                             "Pass a smaller seed.")
    return v


def _check_layers_spec(layers: Any) -> None:
    ok = (isinstance(layers, (str, type)) or callable(layers)
          or (isinstance(layers, (list, tuple)) and all(isinstance(p, (str, type)) for p in layers)))
    if not ok or (isinstance(layers, (list, tuple)) and not layers):
        raise expected_error(
            "layers", "'auto', a module path or glob, a module type (or tuple of types), a predicate "
            "f(name, module) -> bool, or a non-empty list of paths, globs and types",
            f"{type(layers).__name__} {layers!r}"[:200], "repdiag.capture.list_layers(model) shows the paths.")


def _check_metrics_spec(metrics: Any) -> None:
    if metrics is None or isinstance(metrics, str):
        return
    if not isinstance(metrics, (list, tuple)) or not all(isinstance(m, str) for m in metrics):
        raise expected_error("metrics", "'default', 'all', None, a metric name or a list of metric names",
                             f"{type(metrics).__name__} {metrics!r}"[:200], "`repdiag metrics` lists the names.")


def _option_names(fn: Any) -> frozenset[str] | None:
    """The keyword options a metric plugin ``fn(data, **options)`` declares; None for ``**kwargs``."""
    import inspect

    params = list(inspect.signature(fn).parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params[1:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def check_metric_options(metric_options: Any, selected: Sequence[Any], registry: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` for a misspelled ``metric_options`` key: a name that is neither
    ``"*"`` nor a registered metric, an option the named metric's plugin does not declare, or a
    ``"*"`` option no selected metric declares. ``selected``: the metrics the recorder computes;
    ``registry``: every registered metric by name (each with ``.name`` and ``.fn``)."""
    if metric_options is None:
        return
    if not isinstance(metric_options, Mapping):
        raise expected_error("metric_options", "a dict {metric name or '*': {option: value}}",
                             f"{type(metric_options).__name__} {metric_options!r}"[:200],
                             "E.g. metric_options={'channels_off': {'off_threshold': 0.95}}.")
    for key, opts in metric_options.items():
        if key != "*" and key not in registry:
            raise expected_error("metric_options keys", "'*' or names of registered metrics", repr(key),
                                 (did_you_mean(key, sorted(registry)).strip() + " `repdiag metrics` lists them.").strip())
        if not isinstance(opts, Mapping) or not all(isinstance(k, str) for k in opts):
            raise expected_error(f"metric_options[{key!r}]", "a dict of option names to values",
                                 f"{type(opts).__name__} {opts!r}"[:200])
        if key == "*":
            declared = [_option_names(m.fn) for m in selected]
            if any(d is None for d in declared):
                continue
            known = sorted(set().union(*[d for d in declared if d is not None]))
            where = "any of the selected metrics"
        else:
            names = _option_names(registry[key].fn)
            if names is None:
                continue
            known = sorted(names)
            where = f"metric {key!r}"
        for opt in opts:
            if opt not in known:
                raise expected_error(
                    f"the options in metric_options[{key!r}]",
                    f"options {where} declares ({', '.join(known)})" if known else f"empty: {where} takes no options",
                    repr(opt), (did_you_mean(opt, known).strip() + " `repdiag metrics` describes each metric.").strip())


def check_attach_args(layers: Any, *, every: Any, max_samples: Any, reduce: Any, metrics: Any, seed: Any,
                      options: Mapping[str, Any]) -> None:
    """Validate :func:`repdiag.attach`'s arguments before anything is hooked: one
    :class:`ConfigError` per bad value, a close match for a misspelled name."""
    import inspect

    from .capture._extensions import EXTENSION_KEYS
    from .capture._recorder import _REDUCES, Recorder
    from .metrics._registry import available_metrics, resolve_metrics

    _check_layers_spec(layers)
    check_positive_int(every, "every")
    check_positive_int(max_samples, "max_samples")
    check_choice(reduce, "reduce", _REDUCES)
    check_seed(seed)
    _check_metrics_spec(metrics)
    allowed = sorted(set(inspect.signature(Recorder.__init__).parameters) - {"self", "model"} | set(EXTENSION_KEYS))
    for key in options:
        if key not in allowed:
            raise expected_error("attach's keyword options", f"among {', '.join(allowed)}", repr(key),
                                 did_you_mean(key, allowed).strip(), cls=UnknownOptionError)
    check_metric_options(options.get("metric_options"), resolve_metrics(metrics), available_metrics())


def check_dims(dims: Any, what: str, *, none_ok: bool) -> int | dict[str, int] | None:
    """``feature_dim`` / ``batch_dim`` as given: an int, a ``{layer: int}`` mapping (or None for
    ``feature_dim``). Whether the dim exists is checked against each activation's rank at its
    first call (``capture._hooks.layout_of``)."""
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if dims is None and none_ok:
        return None
    if is_int(dims):
        return int(dims)
    if isinstance(dims, Mapping) and all(isinstance(k, str) and is_int(v) for k, v in dims.items()):
        return {k: int(v) for k, v in dims.items()}
    raise ConfigError(f"{what} must be {'None (automatic), ' if none_ok else ''}an int or a dict "
                      f"{{layer path: int}}; got {type(dims).__name__} {dims!r}.")
