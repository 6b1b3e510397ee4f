"""Which modules to hook, and how their activations are laid out."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from typing import Any, Union

from torch import nn

from .._errors import ConfigError, LayerNotFoundError
from ._layout import is_hf_class

__all__ = ["LayerSpec", "ACTIVATION_TYPES", "unwrap", "select_layers", "glob_regex", "is_activation"]

LayerSpec = Union[str, type, tuple, Sequence[Any], Callable[[str, nn.Module], bool]]

ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Hardswish, nn.Hardtanh, nn.Softplus, nn.Tanh, nn.Sigmoid, nn.Hardsigmoid, nn.GLU,
)
"""The torch modules ``layers="auto"`` picks first: their outputs are the post-activation
representations. Hugging Face activation modules (every class defined in
``transformers.activations``, and subclasses of them) are picked too: see :func:`is_activation`."""

_FALLBACK_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd, nn.Linear, nn.Bilinear, nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm,
    nn.RNNBase, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer,
)
"""What ``"auto"`` picks when the model has no activation module (it calls ``F.relu`` in
``forward``): parameterised layers and whole sequence blocks, outermost first (a
TransformerEncoderLayer is taken whole, its inner Linear layers are not)."""

def unwrap(model: nn.Module) -> nn.Module:
    """The wrapped module of DataParallel / DistributedDataParallel, else ``model``."""
    while isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    return model


def is_activation(m: nn.Module) -> bool:
    """Whether ``layers="auto"`` takes ``m`` as an activation: an instance of
    :data:`ACTIVATION_TYPES`, or of a class defined in ``transformers.activations`` (GELUActivation,
    NewGELUActivation, QuickGELUActivation, ...; recognised by the module that defines the class,
    anywhere in its hierarchy, so new Hugging Face activations need no list kept in sync)."""
    return isinstance(m, ACTIVATION_TYPES) or any(
        c.__module__ == "transformers.activations" for c in type(m).__mro__ if c is not nn.Module)


def _is_fallback(m: nn.Module) -> bool:
    return isinstance(m, _FALLBACK_TYPES) or is_hf_class(m, "Conv1D")


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A module-path glob as a regex: ``*`` and ``?`` stay within one dotted level, ``**``
    crosses levels (``a.**.b`` also matches ``a.b``), ``[...]`` is a character class.

    >>> bool(glob_regex("encoder.layer.*.output.dense").fullmatch("encoder.layer.0.attention.output.dense"))
    False
    >>> bool(glob_regex("h.**").fullmatch("h.0.mlp.act"))
    True
    """
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            j = i + 2
            if pattern.startswith(".", j) and (i == 0 or pattern[i - 1] == "."):
                out.append(r"(?:[^.]*\.)*")  # "**." : zero or more whole levels
                j += 1
            else:
                out.append(".*")
            i = j
            continue
        if c == "*":
            out.append("[^.]*")
        elif c == "?":
            out.append("[^.]")
        elif c == "[":
            k = pattern.find("]", i + 1)
            if k < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:k]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
                i = k
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


def _auto(named: list[tuple[str, nn.Module]]) -> list[str]:
    acts = [n for n, m in named if n and is_activation(m)]
    if acts:
        return acts
    picked: list[str] = []
    for n, m in named:
        if n and _is_fallback(m) and not any(n.startswith(p + ".") for p in picked):
            picked.append(n)
    return picked


def select_layers(model: nn.Module, layers: LayerSpec) -> list[str]:
    """Module paths of ``model`` chosen by ``layers``, in ``named_modules()`` order.

    ``layers`` may be ``"auto"``; a glob over module paths with path semantics (``*`` within one
    dotted level: ``"h.*"`` is the blocks ``h.0``, ``h.1``, not their submodules; ``**`` across
    levels: ``"h.**.act"``); an exact path;
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
            if any(c in p for c in "*?["):
                rx = glob_regex(p)
                hits = [n for n in names if rx.fullmatch(n)]
            else:
                hits = [p] if p in names else []
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


def list_layers(model: nn.Module) -> list[tuple[str, str]]:
    """Every ``(path, class name)`` of ``model`` (unwrapped), for choosing ``layers``."""
    return [(n, type(m).__name__) for n, m in unwrap(model).named_modules() if n]
