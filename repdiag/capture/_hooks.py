"""The recorder's forward hooks: per-layer capture state and recording one activation.

The hook is the hot path. On a step that is not due it returns after reading one Python bool.
On a due step it detaches the activation, updates the layer's streaming statistics on the full
tensor, reduces conv maps per ``reduce`` and offers the rows to the layer's reservoir, all on the
activation's device with no host synchronisation. It never returns a value, so the model's
outputs, gradients, parameters, buffers, RNG state and mode are untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .._errors import RepdiagError, ShapeError
from .._validation import first_tensor
from ._buffer import Reservoir
from ._select import layout_of
from ._stats import StreamingStats, scratch_size

if TYPE_CHECKING:  # pragma: no cover
    from ._recorder import Recorder

__all__ = ["HookedLayer", "MAX_PENDING", "make_hook", "record"]

MAX_PENDING = 64
"""Unlabelled batches a layer remembers for :meth:`Recorder.step` (older ones lose their labels)."""


@dataclass
class HookedLayer:
    """One hooked module and what the recorder keeps for it."""

    name: str
    module: nn.Module
    reservoir: Reservoir
    stats: StreamingStats | None = None
    depth: int | None = None
    layout: tuple[int, int] | None = None
    calls: int = 0
    # (slots, sample_idx or None for "row i is sample i", batch) of each call since the last step()
    pending: list[tuple[Tensor, Tensor | None, int]] = field(default_factory=list)
    _spare: list[Tensor] = field(default_factory=list)  # slot buffers free for reuse

    @property
    def kind(self) -> str:
        return type(self.module).__name__

    def remember(self, slots: Tensor, sample_idx: Tensor | None, n: int) -> None:
        """Keep where a call's rows went until :meth:`Recorder.step` brings their labels.

        The slots are copied into a buffer reused from step to step: a fresh small tensor that
        lives from the forward pass to ``step()`` sits between the large activations in the host
        heap, and on CPU under glibc that made the training step measurably slower (benchmarks.md).
        """
        if len(self.pending) >= MAX_PENDING:  # step() is not being called: labels stay unknown
            self._spare.append(self.pending.pop(0)[0])
        k = slots.numel()
        for i, spare in enumerate(self._spare):  # by index: list.remove would compare tensors by value
            if spare.numel() == k and spare.device == slots.device:
                buf = self._spare.pop(i)
                break
        else:
            buf = torch.empty_like(slots)
        self.pending.append((buf.copy_(slots), sample_idx, n))

    def forget_pending(self) -> None:
        """Drop the pending calls, keeping their buffers for the next step."""
        self._spare.extend(slots for slots, _, _ in self.pending)
        del self._spare[:-MAX_PENDING]
        self.pending.clear()


def make_hook(rec: Recorder, layer: HookedLayer, *, output: bool) -> Callable[..., None]:
    """A forward hook (``output=True``) or forward pre-hook recording ``layer`` into ``rec``."""

    def hook(module: nn.Module, args: Any, out: Any = None) -> None:
        if not rec._active or rec._paused:
            return
        t = first_tensor(out if output else args)
        if t is None or not t.is_floating_point() or t.ndim == 0:
            return
        try:
            with torch.no_grad():
                record(rec, layer, t.detach())
        except RepdiagError:
            rec.detach()
            raise
        except (RuntimeError, ValueError) as exc:
            rec.detach()
            raise RepdiagError(
                f"capturing layer {layer.name!r} ({layer.kind}) failed on an activation of shape "
                f"{tuple(t.shape)}: {exc}. repdiag detached itself; the model is unchanged."
            ) from exc

    return hook


def _layout(rec: Recorder, layer: HookedLayer, x: Tensor) -> tuple[int, int]:
    """The (batch, feature) dims of ``x``: fixed for <= 2-D, ``feature_dim`` if set, else inferred
    once per layer from its module (and the layout of the layer that ran before it)."""
    if x.ndim <= 2:
        return 0, max(x.ndim - 1, 0)
    if rec.feature_dim is not None:
        return rec.batch_dim, rec.feature_dim % x.ndim
    if layer.layout is None or len(layer.layout) != 2:
        prev = None
        for other in sorted(
            (lay for lay in rec._layers.values() if lay.depth is not None and lay.layout is not None),
            key=lambda lay: lay.depth or 0,
        ):
            prev = other.layout
        layer.layout = layout_of(layer.module, x.ndim, prev)
    b, f = layer.layout
    return b, f % x.ndim


def record(rec: Recorder, layer: HookedLayer, x: Tensor) -> None:
    """Update ``layer``'s statistics with the detached activation ``x`` and offer its rows to the
    reservoir, remembering where they went until :meth:`Recorder.step` brings their labels."""
    if layer.depth is None:
        layer.depth = sum(1 for lay in rec._layers.values() if lay.depth is not None)
    if x.ndim == 1:
        x = x[:, None]
    bdim, fdim = _layout(rec, layer, x)
    if bdim == fdim:
        raise ShapeError(f"batch and feature dims coincide ({bdim}) for layer {layer.name!r}; set feature_dim.")
    x = x.movedim((bdim, fdim), (0, 1))  # (N, D, *positions), a view
    n, d = x.shape[0], x.shape[1]
    if layer.stats is None:
        layer.stats = StreamingStats(d, x.device, eps=rec.sparsity_eps)
    elif layer.stats.units != d:
        raise ShapeError(
            f"layer {layer.name!r} produced {d} units on this call but {layer.stats.units} before; "
            "repdiag needs a fixed feature size per layer. Select another layer or set feature_dim."
        )
    scratch = None
    if x.ndim > 2 and scratch_size(x):  # one zero-mask buffer per device and dtype, shared, grown when needed
        key = (x.device, torch.float64 if x.dtype == torch.float64 else torch.float32)
        scratch = rec._scratch.get(key)
        if scratch is None or scratch.numel() < scratch_size(x):
            scratch = rec._scratch[key] = torch.empty(scratch_size(x), dtype=key[1], device=x.device)
    map_means = layer.stats.update(x, scratch)
    sample_idx: Tensor | None = None  # row i is sample i
    if rec.reduce == "mean" or x.ndim == 2:
        rows = map_means.to(x.dtype) if x.ndim > 2 else x
    elif rec.reduce == "positions":
        p = x[0, 0].numel()
        rows = x.flatten(2).transpose(1, 2).reshape(n * p, d)
        sample_idx = torch.arange(n, device=x.device).repeat_interleave(p)
    else:  # flatten: the whole representation of a sample is one row
        rows = x.reshape(n, -1)
    if layer.reservoir.data is not None and layer.reservoir.data.shape[1] != rows.shape[1]:
        raise ShapeError(
            f"layer {layer.name!r} gave rows of {rows.shape[1]} features with reduce={rec.reduce!r}, "
            f"{layer.reservoir.data.shape[1]} before (the input size changed?). Use reduce='mean'."
        )
    slots = layer.reservoir.offer(rows.to(layer.reservoir.data.dtype) if layer.reservoir.data is not None else rows)
    layer.calls += 1
    layer.remember(slots, sample_idx, n)
