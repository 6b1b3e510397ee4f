"""What a layer is and where it sits: the role of a module class (activation, norm, linear, conv,
block, other) and one forward-order position per layer of a run.

Both work from names only (class names and module paths), so tables read back from disk, run
directories and live recorders get the same answers. Nothing here imports the rest of repdiag.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["ROLES", "role_of", "run_depths", "module_layers"]

ROLES: tuple[str, ...] = ("activation", "norm", "linear", "conv", "block", "other")
"""Roles a layer can have; ``compare`` aligns layers of one role with layers of the same role."""

_ACTIVATIONS = frozenset({
    "ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish",
    "Hardswish", "Hardtanh", "Softplus", "Tanh", "Sigmoid", "Hardsigmoid", "GLU", "Softsign", "Tanhshrink",
    "Threshold", "LogSigmoid", "Swish", "GELUTanh", "PytorchGELUTanh",
})
_BLOCK = re.compile(r"(TransformerEncoderLayer|TransformerDecoderLayer|Block|Layer$|Bottleneck|BasicBlock|"
                    r"Attention|RNN|LSTM|GRU)")


def role_of(module: str | None) -> str:
    """The role of a module class name, one of :data:`ROLES`.

    ``"norm"`` is any class whose name contains ``Norm`` (BatchNorm*, LayerNorm, GroupNorm,
    RMSNorm, repdiag's unitized BN); ``"conv"`` names starting ``Conv``; ``"linear"`` ``Linear``
    and ``Bilinear``; ``"activation"`` the activation modules ``layers="auto"`` picks (Hugging
    Face ones by their ``*Activation`` names); ``"block"`` Transformer layers, residual blocks and RNNs.

    >>> [role_of(m) for m in ("ReLU", "BatchNorm2d", "Conv2d", "Linear", "BasicBlock", "MaxPool2d")]
    ['activation', 'norm', 'conv', 'linear', 'block', 'other']
    """
    if not module:
        return "other"
    if module in _ACTIVATIONS or module.endswith("Activation"):  # Hugging Face: GELUActivation, ...
        return "activation"
    if "Norm" in module:
        return "norm"
    if module.startswith(("Conv", "LazyConv")):
        return "conv"
    if module in ("Linear", "Bilinear", "LazyLinear", "NonDynamicallyQuantizableLinear", "Conv1D"):
        return "linear"
    if _BLOCK.search(module):
        return "block"
    return "other"


def run_depths(modules: Sequence[tuple[str, bool]], hooked: Sequence[str]) -> dict[str, int]:
    """One forward-order position per layer of a run, unique within the run.

    Hooked layers keep the order in which they ran; every other layer that rows can name (a
    leaf module, or one owning parameters directly: BN layers of the gamma table, the
    parameter layers of the covariate-shift probe) is placed after the hooked layer that
    precedes it in ``named_modules()`` order. Positions count those layers, 0, 1, 2, ...

    Parameters
    ----------
    modules : sequence of (name, counts)
        Every module path in ``named_modules()`` order (the root ``""`` is skipped) and whether
        it is a layer in its own right (a leaf, or it owns parameters directly).
    hooked : sequence of str
        The hooked layers in forward order.

    Returns
    -------
    dict
        ``{module path: depth}``.

    Examples
    --------
    >>> mods = [("body", False), ("body.0", True), ("body.1", True), ("body.2", True), ("body.3", True)]
    >>> run_depths(mods, ["body.2"])
    {'body.0': 0, 'body.1': 1, 'body.2': 2, 'body.3': 3}
    """
    rank = {name: i for i, name in enumerate(hooked)}
    keys: list[tuple[int, int, int, str]] = []
    last = -1
    for idx, (name, counts) in enumerate(modules):
        if not name:
            continue
        if name in rank:
            last = max(last, rank[name])
            keys.append((rank[name], 0, idx, name))
        elif counts:
            keys.append((last, 1, idx, name))
    keys += [(rank[n], 0, -1, n) for n in hooked if n not in {k[3] for k in keys}]
    return {k[3]: i for i, k in enumerate(sorted(keys))}


def module_layers(model: Any) -> list[tuple[str, bool]]:
    """``(name, counts)`` of every module of ``model`` for :func:`run_depths`: ``counts`` is
    True for a leaf module or one that owns parameters directly."""
    return [(n, next(iter(m.children()), None) is None or next(iter(m.parameters(recurse=False)), None) is not None)
            for n, m in model.named_modules()]
