"""The :class:`Recorder` that ``repdiag.attach`` (``_attach``) returns: forward hooks that capture activations
into bounded buffers, the step schedule, and the table of metrics computed on those buffers.

The hooks themselves (the hot path) live in ``_hooks``, the row building in ``_rows`` and the
optional probe wiring in ``_extensions``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
import torch
from torch import Tensor, nn

from .._errors import ConfigError, RepdiagError, ShapeError
from .._validation import check_choice, check_dims, check_labels, check_nonneg_float, check_positive_int, check_seed
from ..metrics._plan import KMeansMemory
from ..metrics._registry import LayerData, Metric, Row, resolve_metrics
from ..runs import History, RunWriter, layer_entries
from ..tables import concat_tables, empty_table
from ._buffer import Reservoir
from ._distributed import gather_layer_data, rank_seed, sync_target
from ._hooks import HookedLayer, HookState, abort_forward, make_hook, make_root_hooks
from ._layout import LayoutContext
from ._rows import collect_layer_data, compute_rows, depth_order, finish_rows
from ._select import LayerSpec, select_layers, unwrap
from ._stats import StreamingStats

__all__ = ["Recorder", "StepContext"]

Reduce = Literal["mean", "positions", "flatten"]
_REDUCES = ("mean", "positions", "flatten")


@dataclass
class StepContext:
    """What a step callback sees: the step just completed, its labels and inputs (if given)."""

    step: int
    labels: Tensor | None
    inputs: Any
    due: bool


StepCallback = Callable[["Recorder", StepContext], Iterable[Row]]


class Recorder:
    """Captures per-layer activations of ``model``; create it with :func:`attach`.

    Use it as a context manager, or call :meth:`detach` when done. See :func:`attach` for the
    parameters.
    """

    _plan_memory: KMeansMemory | None = None
    """The k-means warm starts of :meth:`table`, kept across calls (made on first use)."""

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec = "auto",
        *,
        every: int = 1,
        max_samples: int = 4096,
        reduce: Reduce = "mean",
        metrics: str | Sequence[str] | None = "default",
        run: str | None = None,
        seed: int = 0,
        capture: Literal["output", "input"] = "output",
        feature_dim: int | Mapping[str, int] | None = None,
        batch_dim: int | Mapping[str, int] = 0,
        sparsity_eps: float = 0.0,
        snapshot_every: int | None = None,
        metric_options: Mapping[str, Mapping[str, Any]] | None = None,
        distributed: bool | Literal["rank0", "all"] = True,
        distributed_timeout: float | None = None,
        group: str | None = None,
        log_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
        self.every = check_positive_int(every, "every")
        self.max_samples = check_positive_int(max_samples, "max_samples")
        self.reduce: str = check_choice(reduce, "reduce", _REDUCES)
        self.capture: str = check_choice(capture, "capture", ("output", "input"))
        self.sparsity_eps = check_nonneg_float(sparsity_eps, "sparsity_eps")
        if snapshot_every is not None:
            check_positive_int(snapshot_every, "snapshot_every")
        self.snapshot_every = snapshot_every
        self.feature_dim = check_dims(feature_dim, "feature_dim", none_ok=True)
        self.batch_dim: int | dict[str, int] = check_dims(batch_dim, "batch_dim", none_ok=False) or 0
        self.seed = check_seed(seed)
        if distributed not in (True, False, "rank0", "all"):
            raise ConfigError(f"distributed must be True, False, 'rank0' or 'all'; got {distributed!r}.")
        self.distributed = distributed
        self.distributed_timeout = distributed_timeout
        self.run = run if run is not None or log_dir is None else os.path.basename(os.path.abspath(log_dir))
        self.group = group
        self.model = model
        self.inner = unwrap(model)
        self.metrics: list[Metric] = resolve_metrics(metrics)
        self.metric_options: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (metric_options or {}).items()}
        self.step_count = 0
        self._detached = False
        self._callbacks: list[StepCallback] = []
        self.skipped: list[tuple[str, str, str]] = []  # (metric, layer, reason) of the last table()
        modules = dict(self.inner.named_modules())
        self._layers: dict[str, HookedLayer] = {
            name: HookedLayer(name, modules[name], Reservoir(self.max_samples, rank_seed(self.seed, distributed)))
            for name in select_layers(self.inner, layers)
        }
        for what, dims in (("feature_dim", self.feature_dim), ("batch_dim", self.batch_dim)):
            unknown = sorted(set(dims) - set(self._layers)) if isinstance(dims, dict) else []
            if unknown:
                raise ConfigError(f"{what} names {unknown}, which are not recorded layers; recorded: "
                                  f"{list(self._layers)}.")
        # what the hooks see (the hot path reads its flags, not the recorder)
        self._state = HookState(self._layers, LayoutContext(self.inner), reduce=self.reduce, eps=self.sparsity_eps,
                                feature_dim=self.feature_dim, batch_dim=self.batch_dim, on_fault=self.detach)
        self._history = _make_history(self, layers, log_dir)  # finished rows: in memory, or in log_dir
        self._handles: list[torch.utils.hooks.RemovableHandle] = make_root_hooks(self._state, self.inner)
        for layer in self._layers.values():
            if self.capture == "output":
                h = layer.module.register_forward_hook(make_hook(self._state, layer, output=True))
            else:
                h = layer.module.register_forward_pre_hook(make_hook(self._state, layer, output=False),
                                                           with_kwargs=True)
            self._handles.append(h)

    @property
    def _scratch(self) -> dict[tuple[torch.device, torch.dtype], Tensor]:
        return self._state.scratch

    @property
    def layout(self) -> dict[str, str | None]:
        """Each hooked layer's activation layout, once it has run: ``"N,C,H,W"`` (channels first),
        ``"N,H,W,C"`` (channels last), ``"N,T,D"`` / ``"T,N,D"`` (sequences), ``"N,D"``; with
        ``" from .key"`` when the layer's output is structured (a ``ModelOutput``, a tuple) and
        that part was read. None before the layer's first recorded call."""
        return {lay.name: (lay.layout.describe() if lay.layout is not None else None) for lay in self._ordered()}

    # -- masks ----------------------------------------------------------------------------------
    def set_mask(self, mask: Any) -> None:
        """Use ``mask`` (``(batch, sequence)``, 1/True = a real token, 0 = padding) for the
        forward passes that follow, instead of the model's ``attention_mask`` argument (which
        is picked up by itself); ``None`` goes back to that. Sequence layers ``(N, T, D)`` whose
        batch and length match leave padded positions out of their statistics and rows."""
        if mask is not None:
            if not isinstance(mask, Tensor):
                mask = torch.as_tensor(mask)
            if mask.ndim != 2 or mask.is_floating_point() or mask.is_complex():
                raise ShapeError(f"mask must be a 2-D (batch, sequence) integer or bool tensor, 1 = real token; "
                                 f"got {mask.dtype} of shape {tuple(mask.shape)}. Pass the attention_mask.")
        self._state.user_mask = mask
        self._state.mask = mask

    @contextlib.contextmanager
    def masked(self, mask: Any) -> Iterator[None]:
        """:meth:`set_mask` inside a ``with`` block."""
        before = self._state.user_mask
        self.set_mask(mask)
        try:
            yield
        finally:
            self._state.user_mask = before

    # -- schedule -------------------------------------------------------------------------------
    def step(self, labels: Any = None, *, inputs: Any = None) -> None:
        """End the current step: attach ``labels`` (of the batch just seen) to the rows kept from
        it, advance the schedule, and run step callbacks (probes) when due."""
        self._check_attached()
        st = self._state
        was_due = st.active and not st.paused
        if st.in_forward:  # the last forward raised part-way: its rows get no labels
            abort_forward(st)
        lab = None if labels is None else check_labels(labels, None)
        pending = any(layer.pending for layer in self._layers.values())
        if lab is not None and pending and lab.numel() and bool((lab < 0).any()):
            raise ShapeError(f"labels must be class indices >= 0; got {lab.dtype} labels of shape {tuple(lab.shape)} "
                             f"with minimum {int(lab.min())}. Map the classes to 0..k-1 (drop ignore-index "
                             "entries such as -100 before step()).")
        for layer in self._layers.values():
            if lab is not None:
                for p in layer.pending:
                    if p.n != lab.shape[0]:
                        raise ShapeError(
                            f"labels hold {lab.shape[0]} entries but layer {layer.name!r} saw a batch of {p.n} "
                            "samples on this step; pass the labels of the batch just fed to the model."
                        )
                for p in layer.pending:
                    on_dev = lab.to(p.slots.device)
                    layer.reservoir.set_labels(p.slots, on_dev if p.sample_idx is None else on_dev[p.sample_idx])
            layer.forget_pending()
        if was_due and self._layers and st.fired_in_step == 0 and (st.forwards_in_step or lab is not None):
            st.warn_once("never-fired", (
                f"none of the {len(self._layers)} attached layers recorded anything in step {self.step_count}, "
                f"which had {st.forwards_in_step} forward call(s) of the model"
                f"{' and labels' if lab is not None else ''}: the layers did not run, gave no floating "
                "tensor (capture='input' with only integer inputs?), or run compiled (attach before "
                "torch.compile, see docs/capture.md). rec.layers lists them."))
        st.forwards_in_step = st.fired_in_step = 0
        self.step_count += 1
        st.active = self.step_count % self.every == 0
        ctx = StepContext(self.step_count, lab, inputs, was_due)
        for cb in self._callbacks:
            rows = list(cb(self, ctx))
            if rows:
                self._history.append(self._finish(rows))
        if self.snapshot_every is not None and self.step_count % self.snapshot_every == 0:
            self.snapshot(reset=True)

    def add_step_callback(self, callback: StepCallback) -> None:
        """Call ``callback(rec, ctx)`` after every :meth:`step`; its rows join the table."""
        self._callbacks.append(callback)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Within this block the hooks record nothing (say, for validation passes)."""
        self._state.paused += 1
        try:
            yield
        finally:
            self._state.paused -= 1

    @property
    def due(self) -> bool:
        """Whether forward passes now are recorded."""
        return self._state.active and not self._state.paused and not self._detached

    # -- read side ------------------------------------------------------------------------------
    @property
    def layers(self) -> list[str]:
        """Hooked module paths, in forward order once they have run (selection order before)."""
        return [lay.name for lay in self._ordered()]

    def _ordered(self) -> list[HookedLayer]:
        seen = sorted((lay for lay in self._layers.values() if lay.depth is not None), key=lambda lay: lay.depth or 0)
        return seen + [lay for lay in self._layers.values() if lay.depth is None]

    def _get(self, layer: str) -> HookedLayer:
        if layer not in self._layers:
            import difflib

            close = difflib.get_close_matches(layer, list(self._layers), n=3, cutoff=0.5)
            from .._errors import LayerNotFoundError

            raise LayerNotFoundError(
                f"layer {layer!r} is not recorded." + (f" Closest: {', '.join(map(repr, close))}." if close else "")
                + f" Recorded: {self.layers}."
            )
        return self._layers[layer]

    def samples(self, layer: str) -> tuple[Tensor, Tensor]:
        """Buffered samples ``(n, d)`` of ``layer`` and their labels ``(n,)`` (``-1`` = unknown).

        Rows are copies in slot order, on the activations' device, in their dtype.
        """
        lay = self._get(layer)
        if lay.reservoir.data is None:
            raise RepdiagError(f"layer {layer!r} has no samples yet: run a forward pass on a due step first.")
        x, y = lay.reservoir.rows()
        return x.clone(), y.clone()

    def stats(self, layer: str) -> StreamingStats | None:
        """The streaming statistics of ``layer`` (None before its first due forward)."""
        return self._get(layer).stats

    def layer_data(self) -> list[LayerData]:
        """What metric plugins see, one entry per layer that has run.

        When ``torch.distributed`` is initialised (and ``distributed`` is not False) this is a
        collective: every rank must call it, and it describes all ranks' data (empty on ranks
        other than 0 with ``distributed="rank0"``)."""
        if sync_target(self.distributed) is not None:
            return gather_layer_data(self) or []
        return collect_layer_data(self._ordered(), self.inner)

    def _depths(self) -> dict[str, int]:
        return depth_order(self.inner, [lay.name for lay in self._ordered() if lay.depth is not None])

    def _finish(self, rows: Iterable[Row]) -> pd.DataFrame:
        return finish_rows(rows, run=self.run, step=self.step_count, model=self.inner, depths=self._depths())

    def compute(self, metrics: Sequence[Metric] | None = None) -> list[Row]:
        """Rows of ``metrics`` (default: the recorder's) on the current buffers, without a step."""
        # stacklevel=3: a skipped-metric warning points at the code that called table() or snapshot()
        if self._plan_memory is None:
            self._plan_memory = KMeansMemory()
        rows, self.skipped = compute_rows(self.layer_data(), self.metrics if metrics is None else list(metrics),
                                          self.metric_options, model=self.inner, memory=self._plan_memory,
                                          distributed=sync_target(self.distributed) is not None, stacklevel=3)
        return rows

    def snapshot(self, *, reset: bool = False) -> pd.DataFrame:
        """Compute the metrics now, keep the rows in the recorder's history (step = steps
        completed), and optionally :meth:`reset` the buffers. Returns the new rows."""
        frame = self._history.label(self._finish(self.compute()))
        self._history.append(frame)
        if reset:
            self.reset()
        return frame

    def table(self) -> pd.DataFrame:
        """The tidy table: every snapshot and callback row so far, plus the metrics computed on the
        current buffers (when anything was captured since the last reset)."""
        frames = self._history.frames()
        if sync_target(self.distributed) is not None or any(lay.reservoir.seen for lay in self._layers.values()):
            frames.append(self._history.label(self._finish(self.compute())))
        return concat_tables(frames) if frames else empty_table()

    def reset(self) -> None:
        """Empty the buffers and statistics (the allocations stay; history stays)."""
        for lay in self._layers.values():
            lay.reservoir.reset()
            if lay.stats is not None:
                lay.stats = StreamingStats(lay.stats.units, lay.stats.device, eps=self.sparsity_eps)
            lay.forget_pending()

    def log_to(self, writer: Any, *, histograms: bool = False) -> pd.DataFrame:
        """Write :meth:`table` to a TensorBoard ``SummaryWriter`` (see
        :func:`repdiag.integrations.tensorboard.log_to`); returns the table written."""
        from ._tblog import write_table  # the integration's writer lives below capture

        return write_table(self.table(), writer, layer_data=self.layer_data if histograms else None,
                           hist_step=self.step_count)

    def memory_bytes(self) -> int:
        """Bytes held by every buffer, statistic and work buffer (bounded by configuration and
        the largest activation, not by the number of steps)."""
        layers = sum(lay.reservoir.nbytes() + (lay.stats.nbytes() if lay.stats else 0) for lay in self._layers.values())
        return layers + sum(t.numel() * t.element_size() for t in self._scratch.values())

    # -- lifetime -------------------------------------------------------------------------------
    def _check_attached(self) -> None:
        if self._detached:
            raise RepdiagError("this recorder is detached; call repdiag.attach(model) again to record more.")

    def detach(self) -> None:
        """Remove every hook; the model is as it was before :func:`attach`. Idempotent.

        With ``log_dir``, what was captured since the last snapshot is first written as a last
        snapshot (not when an exception is being handled)."""
        if self._history.writing and not self._detached and sys.exc_info()[0] is None \
                and any(lay.reservoir.seen for lay in self._layers.values()):
            self.snapshot(reset=True)
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._scratch.clear()
        self._detached = True

    @property
    def attached(self) -> bool:
        """False once :meth:`detach` ran."""
        return not self._detached

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def __repr__(self) -> str:
        return (f"Recorder(run={self.run!r}, layers={len(self._layers)}, every={self.every}, "
                f"max_samples={self.max_samples}, reduce={self.reduce!r}, step={self.step_count})")


def _make_history(rec: Recorder, layers: LayerSpec, log_dir: str | os.PathLike[str] | None) -> History:
    """Where ``rec`` keeps finished rows: a run directory when ``log_dir`` is given (memory stays
    fixed), else a list; with ``group`` or ``log_dir`` the rows get ``group`` and ``seed`` columns."""
    labelled = rec.group is not None or log_dir is not None
    writer = None
    if log_dir is not None:
        config = {"layers": layers, "resolved_layers": list(rec._layers), "every": rec.every,
                  "max_samples": rec.max_samples, "reduce": rec.reduce, "metrics": [m.name for m in rec.metrics],
                  "capture": rec.capture, "feature_dim": rec.feature_dim, "batch_dim": rec.batch_dim,
                  "sparsity_eps": rec.sparsity_eps, "snapshot_every": rec.snapshot_every,
                  "metric_options": rec.metric_options, "distributed": rec.distributed}
        writer = RunWriter(log_dir, {"run": rec.run, "group": rec.group, "seed": rec.seed, "config": config})
    return History(writer, {"group": rec.group, "seed": rec.seed} if labelled else None,
                   lambda: layer_entries([(lay.name, lay.kind, _entry_layout(lay)) for lay in rec._ordered()],
                                         rec._depths()))


def _entry_layout(lay: HookedLayer) -> tuple[int, int] | None:
    """A layer's (batch dim, unit dim) for the run's metadata; None for 2-D activations."""
    return None if lay.layout is None or lay.layout.ndim <= 2 else (lay.layout.batch, lay.layout.feature)
