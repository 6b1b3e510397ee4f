"""EM internal covariate shift on a fixed probe batch (Huang & Yu, CVPR 2020, arXiv 2001.02814).

``repdiag.attach(model, probe=x, probe_every=k, probe_options={...})`` keeps a fixed probe batch.
At attach time and then every k steps (after :meth:`Recorder.step`) the probe is passed through
the model without gradients; each selected layer's outputs are compared with those of the
previous probe pass and the distances become table rows. The pass leaves the model bitwise as it
was: it runs in the model's current mode (BN in training mode normalises with the probe's own
batch statistics), every buffer (BN running statistics, ``num_batches_tracked``) is restored
afterwards, the global RNG state is forked (dropout inside the pass draws from a fixed seed, so
every pass sees the same masks), and the recorder's own hooks are paused.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .._errors import ConfigError, LayerNotFoundError, RepdiagError, warn_undefined
from .._validation import check_positive_int
from ..functional._transport import (
    coupling_bound,
    emd,
    first_moment_bound,
    sliced_wasserstein,
    wasserstein_1d,
)
from ._hooks import layout_of, pick_tensor

if TYPE_CHECKING:  # pragma: no cover
    from ._recorder import Recorder, StepContext

__all__ = ["attach_probe", "EMShiftProbe", "ESTIMATORS", "reduce_rows"]

ESTIMATORS: dict[str, str] = {
    "unit": "w1_shift_unit",  # mean over units of the per-unit 1-D W1
    "sliced": "w1_shift_sliced",  # sliced W1 (random directions)
    "exact": "w1_shift",  # exact W1 between the two point clouds (probe rows <= exact_max)
    "upper": "w1_shift_upper",  # same-input coupling bound mean_x ||y_t(x) - y_t'(x)||
    "lower": "w1_shift_lower",  # first-moment bound ||mean y_t - mean y_t'||
}
"""Estimator key -> metric name of the rows it writes (each in ``scale="raw"`` and ``"normalized"``)."""


def reduce_rows(x: Tensor, batch_dim: int, feature_dim: int, reduce: str) -> Tensor:
    """Rows ``(n_rows, d)`` of an activation, reduced as :func:`repdiag.attach` does (``reduce``)."""
    if x.ndim == 1:
        return x[:, None]
    if x.ndim == 2:
        return x
    x = x.movedim((batch_dim, feature_dim), (0, 1))
    n, d = x.shape[0], x.shape[1]
    if reduce == "mean":
        return x.mean(dim=tuple(range(2, x.ndim)))
    if reduce == "positions":
        return x.flatten(2).transpose(1, 2).reshape(-1, d)
    return x.reshape(n, -1)


@dataclass
class _Output:
    rows: Tensor
    module: str
    depth: int


def _tensors(obj: Any) -> list[Tensor]:
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


class EMShiftProbe:
    """The step callback behind ``attach(..., probe=x)``; see :func:`attach_probe`."""

    def __init__(self, rec: Recorder, probe: Any, every: int, *, layers: Sequence[str] | None = None,
                 exact_max: int = 512, n_projections: int = 128, seed: int = 0,
                 estimators: Sequence[str] = tuple(ESTIMATORS)) -> None:
        self.rec = rec
        self.probe = probe
        self.every = every
        self.exact_max = check_positive_int(exact_max, "probe_options['exact_max']", minimum=0)
        self.n_projections = check_positive_int(n_projections, "probe_options['n_projections']")
        self.seed = int(seed)
        bad = [e for e in estimators if e not in ESTIMATORS]
        if bad or isinstance(estimators, str):
            raise ConfigError(f"probe_options['estimators'] must be a list drawn from {list(ESTIMATORS)}; "
                              f"got {estimators!r}.")
        self.estimators = tuple(estimators)
        recorded = list(rec._layers)
        if layers is None:
            self.layers = recorded
        else:
            if isinstance(layers, str):
                layers = [layers]
            missing = [name for name in layers if name not in recorded]
            if missing:
                raise LayerNotFoundError(f"probe_options['layers'] {missing} are not recorded layers; choose from "
                                         f"{recorded} (the probe measures the recorder's layers).")
            self.layers = list(layers)
        self.previous: dict[str, _Output] | None = None
        self.previous_step: int | None = None

    # -- the probe pass ---------------------------------------------------------------------------
    def _args(self, device: torch.device | None) -> tuple[tuple[Any, ...], dict[str, Any]]:
        def move(t: Any) -> Any:
            if isinstance(t, Tensor) and device is not None:
                return t.to(device)
            return t

        if isinstance(self.probe, dict):
            return (), {k: move(v) for k, v in self.probe.items()}
        if isinstance(self.probe, (tuple, list)):
            return tuple(move(t) for t in self.probe), {}
        return (move(self.probe),), {}

    def capture(self) -> dict[str, _Output]:
        """Run the probe once; each recorded layer's rows ``(n_rows, d)``. The model is untouched."""
        rec = self.rec
        model = rec.inner
        state = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
        device = state[0].device if state else None
        args, kwargs = self._args(device)
        outs: dict[str, list[Tensor]] = {}
        order: list[str] = []
        handles = []

        def make_hook(name: str, output: bool) -> Any:
            def hook(module: nn.Module, hargs: Any, out: Any = None) -> None:
                t, _ = pick_tensor(out if output else hargs)
                if t is None and not output:
                    t, _ = pick_tensor(out)  # keyword inputs
                if t is not None and t.is_floating_point():
                    outs.setdefault(name, []).append(t.detach().clone())
                    if name not in order:
                        order.append(name)
            return hook

        buffers = [(mod, key, buf, buf.detach().clone()) for mod in model.modules()
                   for key, buf in mod._buffers.items() if buf is not None]
        cuda = sorted({t.device.index or 0 for t in (*state, *_tensors(args), *_tensors(kwargs))
                       if t.device.type == "cuda"})
        try:
            for name, lay in rec._layers.items():
                if rec.capture == "output":
                    handles.append(lay.module.register_forward_hook(make_hook(name, True)))
                else:
                    handles.append(lay.module.register_forward_pre_hook(make_hook(name, False), with_kwargs=True))
            with torch.random.fork_rng(devices=cuda), torch.no_grad(), rec.paused():
                torch.default_generator.manual_seed(self.seed)
                for i in cuda:
                    torch.cuda.default_generators[i].manual_seed(self.seed)
                try:
                    model(*args, **kwargs)
                except (RuntimeError, TypeError, ValueError) as exc:
                    raise RepdiagError(
                        f"the probe batch could not pass through {type(model).__name__}: {exc}. Pass probe= "
                        "a tensor (or tuple of positional inputs) the model accepts; it is moved to the "
                        "device of the model's parameters."
                    ) from exc
        finally:
            for h in handles:
                h.remove()
            with torch.no_grad():
                for mod, key, buf, saved in buffers:
                    if mod._buffers.get(key) is not buf:  # a module rebound its buffer: put the old one back
                        mod._buffers[key] = buf
                    buf.copy_(saved)
        result: dict[str, _Output] = {}
        for depth, name in enumerate(order):
            lay = rec._layers[name]
            parts = []
            for x in outs[name]:
                if x.ndim > 2:
                    where = lay.layout.source if lay.layout is not None else ""
                    b, f = layout_of(rec._state, lay, x, where)[:2]
                else:
                    b, f = 0, max(x.ndim - 1, 0)
                parts.append(reduce_rows(x, b, f, rec.reduce))
            if len({p.shape[1] for p in parts}) == 1:
                result[name] = _Output(torch.cat(parts), lay.kind, depth)
        return result

    # -- comparison -------------------------------------------------------------------------------
    def compare(self, before: _Output, after: _Output, layer: str) -> list[dict[str, Any]]:
        """Rows comparing one layer's probe outputs at two times (raw and scale-normalised)."""
        y0, y1 = before.rows, after.rows
        n = y0.shape[0]
        names = [ESTIMATORS[e] for e in self.estimators if e != "exact" or n <= self.exact_max]
        if y0.shape != y1.shape:
            warn_undefined(f"EM shift of layer {layer!r}",
                           f"its probe outputs changed shape ({tuple(y0.shape)} -> {tuple(y1.shape)})")
            raw = dict.fromkeys(names, math.nan)
            scale = math.nan
        elif not bool(torch.isfinite(y0).all() and torch.isfinite(y1).all()):
            warn_undefined(f"EM shift of layer {layer!r}", "its probe outputs hold NaN or Inf (training diverged?)")
            raw = dict.fromkeys(names, math.nan)
            scale = math.nan
        else:
            raw = {}
            for e in self.estimators:
                if e == "unit":
                    raw[ESTIMATORS[e]] = float(wasserstein_1d(y0, y1).mean())
                elif e == "sliced":
                    raw[ESTIMATORS[e]] = float(sliced_wasserstein(y0, y1, self.n_projections, seed=self.seed))
                elif e == "exact" and n <= self.exact_max:
                    raw[ESTIMATORS[e]] = float(emd(y0, y1))
                elif e == "upper":
                    raw[ESTIMATORS[e]] = float(coupling_bound(y0, y1))
                elif e == "lower":
                    raw[ESTIMATORS[e]] = float(first_moment_bound(y0, y1))
            norms = 0.5 * (torch.linalg.vector_norm(y0.float(), dim=1).mean()
                           + torch.linalg.vector_norm(y1.float(), dim=1).mean())
            scale = float(norms)
            if scale == 0.0:
                warn_undefined(f"scale-normalised EM shift of layer {layer!r}",
                               "its mean output norm is 0 on the probe (a dead layer)")
                scale = math.nan
        rows = []
        for metric, value in raw.items():
            base = {"layer": layer, "module": after.module, "depth": after.depth, "metric": metric, "n": n}
            rows.append({**base, "value": value, "scale": "raw"})
            rows.append({**base, "value": value / scale if scale == scale else math.nan, "scale": "normalized"})
        return rows

    def __call__(self, rec: Recorder, ctx: StepContext) -> Iterable[dict[str, Any]]:
        if ctx.step % self.every:
            return []
        current = self.capture()
        rows: list[dict[str, Any]] = []
        if self.previous is not None:
            for name in self.layers:
                if name in current and name in self.previous:
                    rows += self.compare(self.previous[name], current[name], name)
        self.previous, self.previous_step = current, ctx.step
        return rows


def attach_probe(rec: Recorder, probe: Any, every: int | None = None, **options: Any) -> EMShiftProbe:
    """Measure EM internal covariate shift on a fixed probe batch; called by :func:`repdiag.attach`.

    ``repdiag.attach(model, probe=x, probe_every=k, probe_options={...})`` passes ``x`` through
    the model now (the baseline) and after every k-th :meth:`Recorder.step`, and writes rows at
    step t comparing each layer's probe outputs with those at step t - k. Layers are the
    recorder's, reduced as its ``reduce`` says (``"mean"``: one row per probe input, so the rows
    of two passes are paired by input). Metrics (Huang & Yu, CVPR 2020):

    ``w1_shift_unit``
        mean over units of the per-unit 1-D W1 (:func:`repdiag.functional.wasserstein_1d`);
    ``w1_shift_sliced``
        sliced W1 (:func:`repdiag.functional.sliced_wasserstein`, ``n_projections``, ``seed``);
    ``w1_shift``
        exact W1 between the two clouds (:func:`repdiag.functional.emd`), only when the probe
        gives at most ``exact_max`` rows;
    ``w1_shift_upper``, ``w1_shift_lower``
        the coupling bound ``mean_x ||y_t(x) - y_t'(x)||`` and the first-moment bound
        ``||mean y_t - mean y_t'||``, which bracket the exact W1.

    Each comes twice, told apart by the ``scale`` column: ``"raw"``, and ``"normalized"`` =
    divided by the mean output norm ``(mean_x ||y_t(x)|| + mean_x ||y_t'(x)||) / 2`` (W1 is scale
    dependent; per-unit W1 is divided by the same vector norm).

    Parameters
    ----------
    rec : Recorder
    probe : tensor, tuple/list of tensors, or dict
        The fixed probe inputs (``model(probe)``, ``model(*probe)`` or ``model(**probe)``); moved
        to the device of the model's parameters.
    every : int, optional
        Probe every ``every`` steps; default the recorder's ``every``.
    **options
        ``layers`` (subset of the recorder's layers), ``exact_max`` (default 512), ``n_projections``
        (128), ``seed`` (0: projections and dropout masks inside the pass), ``estimators`` (subset
        of ``"unit", "sliced", "exact", "upper", "lower"``).
    """
    if probe is None:
        raise ConfigError("probe_every / probe_options need probe=... (a fixed batch of inputs, e.g. x[:256]).")
    every = rec.every if every is None else check_positive_int(every, "probe_every")
    allowed = {"layers", "exact_max", "n_projections", "seed", "estimators"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(f"unknown probe_options {unknown}; allowed: {sorted(allowed)}.")
    cb = EMShiftProbe(rec, probe, every, **options)
    cb.previous, cb.previous_step = cb.capture(), rec.step_count
    rec.add_step_callback(cb)
    return cb
