"""The recorder's forward hooks: the state they share, per-layer capture state and recording one
activation.

The hook is the hot path. On a step that is not due it returns after reading one Python bool.
On a due step it detaches the activation, updates the layer's streaming statistics on the full
tensor, reduces conv maps and sequences per ``reduce`` and offers the rows to the layer's
reservoir, all on the activation's device with no host synchronisation (a padding mask costs
one, to count the kept rows). It never returns a value, so the model's outputs, gradients,
parameters, buffers, RNG state and mode are untouched.

The hooks see a :class:`HookState`, not the :class:`~repdiag.capture.Recorder`: the schedule
flags, the capture options, the layers and the work buffers. Root hooks on the model keep the
forward bookkeeping: which root call a row came from (an aborted call's rows are dropped), the
padding mask of the call, and whether a step had forward calls at all.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .._errors import RepdiagError, RepdiagWarning, ShapeError
from ._buffer import Reservoir
from ._layout import Layout, LayoutContext, fixed_layout, infer_layout
from ._stats import StreamingStats, scratch_size

__all__ = ["HookState", "HookedLayer", "MAX_PENDING", "make_hook", "make_root_hooks", "pick_tensor", "record",
           "layout_of", "abort_forward"]

MAX_PENDING = 64
"""Unlabelled batches a layer remembers for :meth:`Recorder.step` (older ones lose their labels)."""

_in_backward = torch._C._current_graph_task_id  # != -1 while autograd runs a backward pass


@dataclass
class Pending:
    """Where one call's rows went, until :meth:`Recorder.step` brings their labels."""

    slots: Tensor
    sample_idx: Tensor | None  # None: row i is sample i
    n: int  # samples in the call's batch
    forward: int  # the root call that produced the rows
    seen_before: int  # the reservoir's count before the offer (to roll an aborted call back)
    rows: int


@dataclass
class HookedLayer:
    """One hooked module and what the recorder keeps for it."""

    name: str
    module: nn.Module
    reservoir: Reservoir
    stats: StreamingStats | None = None
    depth: int | None = None
    layout: Layout | None = None
    calls: int = 0
    pending: list[Pending] = field(default_factory=list)
    _spare: list[Tensor] = field(default_factory=list)  # slot buffers free for reuse

    @property
    def kind(self) -> str:
        return type(self.module).__name__

    def remember(self, slots: Tensor, sample_idx: Tensor | None, n: int, forward: int, seen_before: int) -> None:
        """Keep where a call's rows went until :meth:`Recorder.step` brings their labels.

        The slots are copied into a buffer reused from step to step: a fresh small tensor that
        lives from the forward pass to ``step()`` sits between the large activations in the host
        heap, and on CPU under glibc that made the training step measurably slower (benchmarks.md).
        """
        if len(self.pending) >= MAX_PENDING:  # step() is not being called: labels stay unknown
            self._spare.append(self.pending.pop(0).slots)
        k = slots.numel()
        for i, spare in enumerate(self._spare):  # by index: list.remove would compare tensors by value
            if spare.numel() == k and spare.device == slots.device:
                buf = self._spare.pop(i)
                break
        else:
            buf = torch.empty_like(slots)
        self.pending.append(Pending(buf.copy_(slots), sample_idx, n, forward, seen_before, k))

    def forget_pending(self) -> None:
        """Drop the pending calls, keeping their buffers for the next step."""
        self._spare.extend(p.slots for p in self.pending)
        del self._spare[:-MAX_PENDING]
        self.pending.clear()

    def drop_forward(self, forward: int) -> None:
        """Drop the rows of an aborted root call: they get no labels, and while the reservoir is
        still filling they leave it (its count rolls back). The streaming statistics keep them."""
        keep = []
        for p in reversed(self.pending):
            if p.forward != forward:
                keep.append(p)
                continue
            res = self.reservoir
            if res.seen == p.seen_before + p.rows and res.seen <= res.capacity:
                res.seen = p.seen_before
            self._spare.append(p.slots)
        self.pending = keep[::-1]


@dataclass
class HookState:
    """What the hooks share: the schedule flags, capture options, layers and work buffers."""

    layers: dict[str, HookedLayer]
    context: LayoutContext
    reduce: str = "mean"
    eps: float = 0.0
    feature_dim: int | dict[str, int] | None = None
    batch_dim: int | dict[str, int] = 0
    active: bool = True
    paused: int = 0
    on_fault: Callable[[], None] = lambda: None
    # one float32 work buffer per device, as large as the largest activation, reused by every
    # hook for the zero mask (fresh allocations of that size dominate the hook's cost)
    scratch: dict[tuple[torch.device, torch.dtype], Tensor] = field(default_factory=dict)
    previous: Layout | None = None  # layout of the layer recorded last (inference of the next)
    # root-call bookkeeping (make_root_hooks)
    forward: int = 0
    in_forward: bool = False
    forwards_in_step: int = 0
    fired_in_step: int = 0
    mask: Tensor | None = None  # padding mask of the current root call (1 = real token)
    user_mask: Tensor | None = None  # set_mask(): overrides the model's attention_mask
    warned: set[str] = field(default_factory=set)

    def warn_once(self, key: str, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            warnings.warn(message, RepdiagWarning, stacklevel=4)

    def override(self, name: str) -> tuple[int | None, int]:
        """The user's (feature_dim, batch_dim) for layer ``name`` (None: inferred)."""
        f = self.feature_dim.get(name) if isinstance(self.feature_dim, dict) else self.feature_dim
        b = self.batch_dim.get(name, 0) if isinstance(self.batch_dim, dict) else self.batch_dim
        return f, b


def _real(obj: Any) -> Tensor | None:
    return obj if isinstance(obj, Tensor) and obj.ndim > 0 and (obj.is_floating_point() or obj.is_complex()) else None


def pick_tensor(obj: Any) -> tuple[Tensor | None, str]:
    """The activation in a module's output (or inputs) and where it was found.

    A tensor is itself. In a mapping (a Hugging Face ``ModelOutput``) ``last_hidden_state`` when
    present, else the first floating tensor of at least one dim (a 0-dim ``loss`` is skipped);
    in a tuple or list the first such tensor, recursively. Integer tensors (token ids, masks)
    are never picked. The place is ``""`` for the tensor itself or the first element, else
    ``".key"`` / ``"[i]"``."""
    if isinstance(obj, Tensor):
        return (obj if _real(obj) is not None else None), ""
    if isinstance(obj, Mapping):
        items = list(obj.items())
        if "last_hidden_state" in obj and _real(obj["last_hidden_state"]) is not None:
            return obj["last_hidden_state"], ".last_hidden_state"
        for k, v in items:
            t, where = pick_tensor(v)
            if t is not None:
                return t, f".{k}{where}"
        return None, ""
    if isinstance(obj, (tuple, list)):
        for i, v in enumerate(obj):
            t, where = pick_tensor(v)
            if t is not None:
                return t, ("" if i == 0 else f"[{i}]") + where
    return None, ""


def _fault(st: HookState, layer: HookedLayer, t: Tensor, exc: BaseException) -> None:
    st.on_fault()
    if isinstance(exc, RepdiagError):
        raise exc
    raise RepdiagError(
        f"capturing layer {layer.name!r} ({layer.kind}) failed on an activation of shape "
        f"{tuple(t.shape)}: {exc}. repdiag detached itself; the model is unchanged."
    ) from exc


def make_hook(st: HookState, layer: HookedLayer, *, output: bool) -> Callable[..., None]:
    """A forward hook (``output=True``) or a forward pre-hook registered ``with_kwargs=True``
    (``output=False``: positional inputs first, then keyword inputs) recording ``layer``."""

    def hook(module: nn.Module, args: Any, out: Any = None) -> None:
        if not st.active or st.paused:
            return
        if _in_backward() != -1:  # a checkpointed segment recomputed in backward: counted once already
            return
        if output:
            t, where = pick_tensor(out)
        else:
            t, where = pick_tensor(args)
            if t is None and isinstance(out, Mapping):  # the pre-hook's kwargs
                t, where = pick_tensor(out)
        if t is None:
            return
        try:
            if torch.is_inference_mode_enabled():  # buffers made here must stay usable outside
                with torch.inference_mode(False), torch.no_grad():
                    record(st, layer, t.detach(), where)
            else:
                with torch.no_grad():
                    record(st, layer, t.detach(), where)
        except (RepdiagError, RuntimeError, ValueError) as exc:
            _fault(st, layer, t, exc)

    return hook


def _mask_from_signature(model: nn.Module) -> int | None:
    """Position of ``attention_mask`` among ``model.forward``'s positional parameters."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    for i, p in enumerate(params):
        if p.name == "attention_mask" and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            return i
    return None


def make_root_hooks(st: HookState, model: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
    """Hooks on the model itself: each root call gets an id (a call that raised part-way has its
    rows dropped when the next call starts or at ``step()``) and its padding mask (the
    ``attention_mask`` argument, by keyword or position, unless :meth:`Recorder.set_mask` set one)."""
    index = _mask_from_signature(model)

    def pre(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if st.in_forward:  # the previous call never finished (it raised): drop its rows
            abort_forward(st)
        st.forward += 1
        st.in_forward = True
        if st.active and not st.paused:
            st.forwards_in_step += 1
        mask = st.user_mask
        if mask is None:
            mask = kwargs.get("attention_mask")
            if mask is None and index is not None and len(args) > index:
                mask = args[index]
        st.mask = mask if isinstance(mask, Tensor) and mask.ndim == 2 else None

    def post(module: nn.Module, args: Any, out: Any) -> None:
        st.in_forward = False

    return [model.register_forward_pre_hook(pre, with_kwargs=True), model.register_forward_hook(post)]


def abort_forward(st: HookState) -> None:
    """Drop the rows of the root call in progress (it raised)."""
    for layer in st.layers.values():
        layer.drop_forward(st.forward)
    st.in_forward = False


def layout_of(st: HookState, layer: HookedLayer, x: Tensor, where: str) -> Layout:
    """The layout of ``x``: the override when set (validated against the rank: no modulo), else
    inferred once per layer and rank (:mod:`._layout`)."""
    lay = layer.layout
    if lay is not None and lay.ndim == x.ndim and lay.source == where:
        return lay
    f, b = st.override(layer.name)
    nd = x.ndim
    if f is not None or b != 0:
        for what, v in (("feature_dim", f), ("batch_dim", b)):
            if v is not None and not -nd <= v < nd:
                raise ShapeError(
                    f"{what}={v} does not exist on the {nd}-D activation of shape {tuple(x.shape)} of layer "
                    f"{layer.name!r}: expected a dim in [{-nd}, {nd - 1}]. Pass a valid {what} (or a dict "
                    "{layer: dim}); repdiag detached itself, the model is unchanged.")
    if nd <= 2:
        lay = fixed_layout(0, max(nd - 1, 0), nd, where)
        if f is not None and f % nd != lay.feature and nd == 2:
            lay = fixed_layout(1 - f % nd, f % nd, nd, where)
    elif f is not None:
        lay = fixed_layout(b % nd, f % nd, nd, where)
    else:
        lay = infer_layout(layer.name, layer.module, tuple(x.shape), st.context, st.previous, where)
        if b != 0:
            lay = fixed_layout(b % nd, lay.feature, nd, where)
    if lay.batch == lay.feature:
        raise ShapeError(f"batch and feature dims coincide ({lay.batch}) for layer {layer.name!r} on an activation "
                         f"of shape {tuple(x.shape)}; set feature_dim (or batch_dim) for it.")
    layer.layout = lay
    return lay


def record(st: HookState, layer: HookedLayer, x: Tensor, where: str = "") -> None:
    """Update ``layer``'s statistics with the detached activation ``x`` and offer its rows to the
    reservoir, remembering where they went until :meth:`Recorder.step` brings their labels."""
    if x.is_complex():
        st.warn_once("complex:" + layer.name,
                     f"layer {layer.name!r} produced a {x.dtype} activation; repdiag records real activations "
                     "only, so this layer records nothing. Hook a module that takes .real or .abs() of it.")
        return
    if layer.depth is None:
        layer.depth = sum(1 for lay in st.layers.values() if lay.depth is not None)
    if x.ndim == 1:
        x = x[:, None]
    lay = layout_of(st, layer, x, where)
    st.previous = lay
    x = x.movedim((lay.batch, lay.feature), (0, 1))  # (N, D, *positions), a view
    n, d = x.shape[0], x.shape[1]
    if n == 0:
        st.warn_once("empty:" + layer.name, f"layer {layer.name!r} saw an empty batch (shape "
                     f"{tuple(x.shape)}); nothing was recorded from it. Skip empty batches before the forward.")
        return
    st.fired_in_step += 1
    mask = st.mask
    if mask is not None and (x.ndim != 3 or lay.feature != lay.ndim - 1 or mask.shape != (n, x.shape[2])):
        mask = None  # not this layer's positions (pooled, another sequence, a conv map)
    if mask is not None and (mask.dtype != torch.bool or mask.device != x.device):
        mask = st.mask = mask.to(x.device, torch.bool)  # once per root call, not once per layer
    if layer.stats is None:
        layer.stats = StreamingStats(d, x.device, eps=st.eps)
    elif layer.stats.units != d:
        raise ShapeError(
            f"layer {layer.name!r} produced {d} units on this call but {layer.stats.units} before (layout "
            f"{lay.describe()}, shape {tuple(x.movedim((0, 1), (lay.batch, lay.feature)).shape)}); repdiag needs a "
            "fixed feature size per layer. Select another layer or set feature_dim for it.")
    scratch = None
    if x.ndim > 2 and mask is None and scratch_size(x):  # one zero-mask buffer per device and dtype, grown
        key = (x.device, torch.float64 if x.dtype == torch.float64 else torch.float32)
        scratch = st.scratch.get(key)
        if scratch is None or scratch.numel() < scratch_size(x):
            scratch = st.scratch[key] = torch.empty(scratch_size(x), dtype=key[1], device=x.device)
    map_means = layer.stats.update(x, scratch, mask=mask)
    sample_idx: Tensor | None = None  # row i is sample i
    if st.reduce == "mean" or x.ndim == 2:
        rows = map_means.to(x.dtype) if x.ndim > 2 else x
        if mask is not None:
            keep = mask.any(dim=1)
            if not bool(keep.all()):  # a fully padded sample has no row
                sample_idx = keep.nonzero().squeeze(1)
                rows = rows[sample_idx]
    elif st.reduce == "positions":
        p = x[0, 0].numel()
        rows = x.flatten(2).transpose(1, 2).reshape(n * p, d)
        sample_idx = torch.arange(n, device=x.device).repeat_interleave(p)
        if mask is not None:
            flat = mask.reshape(-1)
            rows, sample_idx = rows[flat], sample_idx[flat]
    else:  # flatten: the whole representation of a sample is one row (padded positions read 0)
        rows = (x if mask is None else torch.where(mask[:, None, :], x, 0)).reshape(n, -1)
    if layer.reservoir.data is not None and layer.reservoir.data.shape[1] != rows.shape[1]:
        raise ShapeError(
            f"layer {layer.name!r} gave rows of {rows.shape[1]} features with reduce={st.reduce!r}, "
            f"{layer.reservoir.data.shape[1]} before (the input size changed?). Use reduce='mean'."
        )
    if rows.shape[0] == 0:
        return
    seen = layer.reservoir.seen
    slots = layer.reservoir.offer(rows.to(layer.reservoir.data.dtype) if layer.reservoir.data is not None else rows)
    layer.calls += 1
    layer.remember(slots, sample_idx, n, st.forward, seen)
