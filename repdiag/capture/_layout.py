"""Which axis of a module's activation holds the batch and which the units: decided in one place.

The rule, applied once per layer (at its first recorded call, again only if the rank changes):

1. A 2-D activation is ``(N, D)``.
2. The module says so: Linear, Bilinear, Hugging Face ``Conv1D``, LayerNorm/RMSNorm (and norm
   classes named ``*LayerNorm`` / ``*RMSNorm``), Embedding, RNNs, attention and Transformer
   layers keep units on the last axis; convolutions, BatchNorm/InstanceNorm, GroupNorm, pooling
   and channel dropout (``Dropout1d/2d/3d``) on axis 1. A LayerNorm subclass with
   ``data_format="channels_first"`` (ConvNeXt) reads axis 1.
3. Otherwise (activations, ``nn.Dropout``, identity, whole blocks) the widths of the
   parameterised modules around it decide: the module's own subtree first, then its parent's,
   grandparent's, ... At each level the candidate axes are 1 (channels first) and the last
   (features last); the last axis wins when its size is the width of a features-last module
   there (a Linear's in/out features, a LayerNorm's size) and axis 1 is not the width of a
   channels-first module of the same rank (a conv's channels, a BatchNorm's features), and
   the other way round. No evidence goes one level up; where both axes fit, the nearest
   parameterised module registered before it whose width fits decides.
4. No evidence anywhere: the layout of the hooked layer that ran before it (same rank), else
   channels first for 4-D and larger maps and for 3-D ones in a model with a ``Conv1d``, else
   (3-D) features last, the ``(N, T, D)`` of sequence models.

The batch axis is 0, or 1 for sequence activations where the module or a torch ancestor says
``batch_first=False`` (RNNs, ``nn.MultiheadAttention``, ``nn.Transformer*``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from torch import nn

__all__ = ["Layout", "LayoutContext", "infer_layout", "fixed_layout", "is_hf_class"]


class Layout(NamedTuple):
    """Where a layer's activation keeps its batch and its units."""

    batch: int
    feature: int
    ndim: int
    name: str  # "N,C,H,W", "N,T,D", "T,N,D", "N,H,W,C", "N,D"
    source: str = ""  # which part of a structured output was read ("" = the tensor itself)

    def describe(self) -> str:
        return self.name + (f" from {self.source}" if self.source else "")


def is_hf_class(module: nn.Module, name: str, origin: str = "transformers") -> bool:
    """Whether a class called ``name`` from the ``origin`` package is in ``module``'s class
    hierarchy (recognises Hugging Face classes without importing ``transformers``)."""
    return any(c.__name__ == name and c.__module__.startswith(origin) for c in type(module).__mro__)


_RMSNORM: tuple[type[nn.Module], ...] = (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()
_LAST_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Bilinear, nn.LayerNorm, nn.Embedding, nn.RNNBase, nn.MultiheadAttention,
    nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.TransformerEncoder, nn.TransformerDecoder,
    nn.Transformer, *_RMSNORM,
)
_FIRST_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase, nn.GroupNorm,
    nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
)
_BATCH_FIRST_TYPES: tuple[type[nn.Module], ...] = (
    nn.RNNBase, nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.Transformer,
)


def _norm_like(module: nn.Module) -> bool:
    name = type(module).__name__
    return "LayerNorm" in name or "RMSNorm" in name


def own_kind(module: nn.Module) -> str | None:
    """``"last"``, ``"first"`` or None (the module does not say) for ``module``'s own output."""
    fmt = getattr(module, "data_format", None)
    if isinstance(fmt, str) and (isinstance(module, nn.LayerNorm) or _norm_like(module)):
        return "first" if fmt.replace("_", "").lower() == "channelsfirst" else "last"
    if isinstance(module, _LAST_TYPES) or is_hf_class(module, "Conv1D"):
        return "last"
    if isinstance(module, _FIRST_TYPES):
        return "first"
    if _norm_like(module) and not any(True for _ in module.children()):
        return "last"
    return None


def _widths(module: nn.Module) -> tuple[str, set[int], int] | None:
    """(kind, widths, rank of its output or 0 = any) of a parameterised leaf, None if not one."""
    kind = own_kind(module)
    if kind is None:
        return None
    w: set[int] = set()
    rank = 0
    if isinstance(module, nn.Linear):
        w = {module.in_features, module.out_features}
    elif isinstance(module, nn.Bilinear):
        w = {module.in1_features, module.in2_features, module.out_features}
    elif isinstance(module, nn.Embedding):
        w = {module.embedding_dim}
    elif isinstance(module, nn.MultiheadAttention):
        w = {module.embed_dim}
    elif isinstance(module, nn.RNNBase):
        w = {module.input_size, module.hidden_size * (2 if module.bidirectional else 1)}
    elif isinstance(module, nn.modules.conv._ConvNd):
        w, rank = {module.in_channels, module.out_channels}, module.weight.ndim
    elif isinstance(module, nn.modules.batchnorm._NormBase):
        w = {module.num_features}
    elif isinstance(module, nn.GroupNorm):
        w = {module.num_channels}
    else:
        weight = getattr(module, "weight", None)
        if is_hf_class(module, "Conv1D") and weight is not None and weight.ndim == 2:
            w = set(weight.shape)
        elif weight is not None and getattr(weight, "ndim", 0) == 1:
            w = {int(weight.shape[0])}
        else:
            shape = getattr(module, "normalized_shape", None)
            if isinstance(shape, tuple) and shape:
                w = {int(shape[-1])}
    return (kind, w, rank) if w else None


class LayoutContext:
    """The model's module tree, indexed once for :func:`infer_layout`."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._modules: dict[str, nn.Module] | None = None

    @property
    def modules(self) -> dict[str, nn.Module]:
        if self._modules is None:
            self._modules = dict(self.model.named_modules())
        return self._modules

    def ancestors(self, name: str) -> Iterator[str]:
        """``name`` itself, its parent, ..., the root ``""``."""
        while True:
            yield name
            if not name:
                return
            name = name.rpartition(".")[0]

    def subtree(self, name: str) -> Iterator[nn.Module]:
        prefix = name + "." if name else ""
        for n, m in self.modules.items():
            if n == name or n.startswith(prefix):
                yield m

    def has_conv(self, ndim: int) -> bool:
        return any(isinstance(m, nn.modules.conv._ConvNd) and m.weight.ndim == ndim for m in self.modules.values())


def _name(batch: int, feature: int, ndim: int) -> str:
    if ndim <= 1:
        return "N"
    if ndim == 2:
        return "N,D"
    pos = {3: ["T"], 4: ["H", "W"], 5: ["D", "H", "W"]}.get(ndim, [f"P{i}" for i in range(ndim - 2)])
    if feature == 1 and batch == 0:
        return ",".join(["N", "C" if ndim > 3 else "C", *(pos if ndim > 3 else ["L"])])
    axes = [""] * ndim
    axes[batch], axes[feature] = "N", "D" if ndim == 3 else "C"
    it = iter(pos)
    return ",".join(a or next(it) for a in axes)


def fixed_layout(batch: int, feature: int, ndim: int, source: str = "") -> Layout:
    """A :class:`Layout` from explicit axes (non-negative, distinct, below ``ndim``)."""
    return Layout(batch, feature, ndim, _name(batch, feature, ndim), source)


def _says_batch_first(m: nn.Module) -> bool | None:
    """What a torch sequence module says about its batch axis (None: it does not say)."""
    if isinstance(m, (nn.TransformerEncoder, nn.TransformerDecoder)):
        layers = getattr(m, "layers", None)
        return _says_batch_first(layers[0]) if layers is not None and len(layers) else None
    if isinstance(m, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
        attn = getattr(m, "self_attn", None)
        return bool(getattr(attn, "batch_first", getattr(m, "batch_first", False)))
    if isinstance(m, _BATCH_FIRST_TYPES):
        return bool(getattr(m, "batch_first", False))
    return None


def _batch_axis(name: str, module: nn.Module, ctx: LayoutContext) -> int:
    mods = ctx.modules
    for anc in ctx.ancestors(name):
        m = mods.get(anc, module if anc == name else None)
        said = None if m is None else _says_batch_first(m)
        if said is not None:
            return 0 if said else 1
    return 0


def _evidence(modules: Iterator[nn.Module], shape: tuple[int, ...], skip: nn.Module | None) -> str | None:
    ndim = len(shape)
    last = first = False
    for m in modules:
        if m is skip:
            continue
        got = _widths(m)
        if got is None:
            continue
        kind, w, rank = got
        if kind == "last" and shape[-1] in w:
            last = True
        elif kind == "first" and shape[1] in w and rank in (0, ndim):
            first = True
    if last != first:
        return "last" if last else "first"
    return "both" if last else None


def _preceding(name: str, shape: tuple[int, ...], ctx: LayoutContext) -> str | None:
    """The kind of the nearest parameterised module registered before ``name`` whose width fits
    its own axis of ``shape`` (the module that most likely fed it)."""
    kind = None
    for n, m in ctx.modules.items():
        if n == name:
            break
        got = _widths(m)
        if got is not None and ((got[0] == "last" and shape[-1] in got[1])
                                or (got[0] == "first" and shape[1] in got[1] and got[2] in (0, len(shape)))):
            kind = got[0]
    return kind


def infer_layout(name: str, module: nn.Module, shape: tuple[int, ...], ctx: LayoutContext,
                 previous: Layout | None = None, source: str = "") -> Layout:
    """The :class:`Layout` of an activation of ``shape`` produced (or taken) by ``module`` at
    path ``name``; see the module docstring for the rule."""
    ndim = len(shape)
    if ndim <= 2:
        return fixed_layout(0, max(ndim - 1, 0), ndim, source)
    kind = own_kind(module)
    if kind is None:
        kind = _evidence(ctx.subtree(name), shape, module) if any(True for _ in module.children()) else None
        for anc in list(ctx.ancestors(name))[1:]:
            if kind is not None:
                break
            kind = _evidence(ctx.subtree(anc), shape, None)
        if kind == "both":  # both axes fit some width nearby: the module registered just before decides
            kind = _preceding(name, shape, ctx)
    if kind is None and previous is not None and previous.ndim == ndim:
        return previous._replace(source=source)
    if kind is None:
        kind = "first" if ndim >= 4 or ctx.has_conv(ndim) else "last"
    if kind == "first":
        return fixed_layout(0, 1, ndim, source)
    batch = _batch_axis(name, module, ctx) if ndim == 3 else 0
    return fixed_layout(batch, ndim - 1, ndim, source)
