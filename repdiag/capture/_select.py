"""Which modules to hook, and how their activations are laid out."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Sequence
from typing import Any, Union

from torch import nn

from .._errors import ConfigError, LayerNotFoundError

__all__ = ["LayerSpec", "ACTIVATION_TYPES", "unwrap", "select_layers", "layout_of"]

LayerSpec = Union[str, type, tuple, Sequence[Any], Callable[[str, nn.Module], bool]]

ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Hardswish, nn.Hardtanh, nn.Softplus, nn.Tanh, nn.Sigmoid, nn.Hardsigmoid, nn.GLU,
)
"""Modules ``layers="auto"`` picks first: their outputs are the post-activation representations."""

_FALLBACK_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd, nn.Linear, nn.Bilinear, nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm,
    nn.RNNBase, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer,
)
"""What ``"auto"`` picks when the model has no activation module (it calls ``F.relu`` in
``forward``): parameterised layers and whole sequence blocks, outermost first (a
TransformerEncoderLayer is taken whole, its inner Linear layers are not)."""

# modules whose >=3-D activations keep features on the last dim (sequence layout)
_LAST_DIM_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Bilinear, nn.LayerNorm, nn.Embedding, nn.RNNBase, nn.MultiheadAttention,
    nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.TransformerEncoder, nn.TransformerDecoder,
    nn.Transformer,
)
# modules with channels on dim 1 (N, C, *spatial)
_CHANNEL_DIM1_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase, nn.GroupNorm,
    nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd, nn.modules.dropout._DropoutNd,
)


def unwrap(model: nn.Module) -> nn.Module:
    """The wrapped module of DataParallel / DistributedDataParallel, else ``model``."""
    while isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    return model


def _is_auto_activation(m: nn.Module) -> bool:
    return isinstance(m, ACTIVATION_TYPES)


def _auto(named: list[tuple[str, nn.Module]]) -> list[str]:
    acts = [n for n, m in named if n and _is_auto_activation(m)]
    if acts:
        return acts
    picked: list[str] = []
    for n, m in named:
        if n and isinstance(m, _FALLBACK_TYPES) and not any(n.startswith(p + ".") for p in picked):
            picked.append(n)
    return picked


def select_layers(model: nn.Module, layers: LayerSpec) -> list[str]:
    """Module paths of ``model`` chosen by ``layers``, in ``named_modules()`` order.

    ``layers`` may be ``"auto"``; a glob over module paths (``"layer*.relu"``); an exact path;
    a module type or tuple of types; a predicate ``f(name, module) -> bool``; or a list mixing
    paths and globs. The root module (``""``) is never selected.
    """
    named = [(n, m) for n, m in model.named_modules() if n]
    names = [n for n, _ in named]
    if isinstance(layers, str) and layers == "auto":
        chosen = _auto(named)
    elif isinstance(layers, type) or (isinstance(layers, tuple) and layers and all(isinstance(t, type) for t in layers)):
        chosen = [n for n, m in named if isinstance(m, layers)]
    elif callable(layers) and not isinstance(layers, (str, list, tuple)):
        chosen = [n for n, m in named if layers(n, m)]
    else:
        patterns = [layers] if isinstance(layers, str) else list(layers)
        want: set[str] = set()
        for p in patterns:
            if isinstance(p, type):
                want.update(n for n, m in named if isinstance(m, p))
                continue
            if not isinstance(p, str):
                raise ConfigError(
                    f"layers must be 'auto', a module path or glob, a module type, a predicate or a list of "
                    f"those; got an entry {p!r} ({type(p).__name__})."
                )
            p = p.removeprefix("module.") if p not in names else p
            hits = [n for n in names if fnmatch.fnmatchcase(n, p)] if any(c in p for c in "*?[") else (
                [p] if p in names else [])
            if not hits:
                close = difflib.get_close_matches(p, names, n=3, cutoff=0.5)
                hint = f" Closest: {', '.join(map(repr, close))}." if close else ""
                raise LayerNotFoundError(
                    f"layer {p!r} matches no module of {type(model).__name__}.{hint} "
                    "repdiag.capture.list_layers(model) shows every path."
                )
            want.update(hits)
        chosen = [n for n in names if n in want]
    if not chosen:
        raise LayerNotFoundError(
            f"no module of {type(model).__name__} matches layers={layers!r} "
            f"({len(names)} modules in all). Pass module paths, globs or types; "
            "repdiag.capture.list_layers(model) shows every path."
        )
    return chosen


def layout_of(module: nn.Module, ndim: int, previous: tuple[int, int] | None = None) -> tuple[int, int]:
    """``(batch_dim, feature_dim)`` of a module's ``ndim``-dimensional activation.

    2-D: ``(0, 1)``. Sequence modules (Linear, LayerNorm, RNNs, Transformer blocks, attention):
    features last, batch on dim 1 when the module says ``batch_first=False``. Conv, norm and
    pooling layers: channels on dim 1. Anything else (activations, dropout, custom modules)
    follows the previous hooked module of the same rank when one is known (``previous`` = its
    ``(batch_dim, feature_dim)``), else channels on dim 1.
    """
    if ndim <= 2:
        return 0, ndim - 1 if ndim else 0
    if isinstance(module, _LAST_DIM_TYPES):
        batch_first = getattr(module, "batch_first", True)
        if isinstance(module, (nn.TransformerEncoder, nn.TransformerDecoder)):
            layers = getattr(module, "layers", None)
            batch_first = getattr(layers[0], "batch_first", False) if layers is not None and len(layers) else False
        if isinstance(module, nn.TransformerEncoderLayer | nn.TransformerDecoderLayer):
            batch_first = getattr(module, "batch_first", False)
        if isinstance(module, (nn.RNNBase, nn.MultiheadAttention, nn.Transformer)):
            batch_first = bool(getattr(module, "batch_first", False))
        return (0 if batch_first else 1), ndim - 1
    if isinstance(module, _CHANNEL_DIM1_TYPES):
        return 0, 1
    if previous is not None:
        return previous
    return 0, 1


def list_layers(model: nn.Module) -> list[tuple[str, str]]:
    """Every ``(path, class name)`` of ``model`` (unwrapped), for choosing ``layers``."""
    return [(n, type(m).__name__) for n, m in unwrap(model).named_modules() if n]
