"""Landscape probes on the recorder's schedule:
``repdiag.attach(model, loss_fn=criterion, landscape_every=100, optimizer=opt)``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .._errors import ConfigError
from .._validation import check_positive_int
from ..metrics._registry import Row
from ._core import LossFn, Problem
from ._covariate import check_step_source, covariate_rows
from ._hessian import hessian_rows
from ._predictiveness import check_step_sizes, predictiveness_rows
from ._state import ProbeGuard

__all__ = ["attach_landscape", "PROBES", "DEFAULT_EVERY"]

PROBES = ("predictiveness", "covariate_shift", "hessian")
DEFAULT_EVERY = 100
_OPTIONS = ("probes", "step_sizes", "lr", "layers", "train", "hessian_iters", "hessian_tol")


def attach_landscape(rec: Any, loss_fn: LossFn | None, every: int | None = None, optimizer: Any = None,
                     **options: Any) -> None:
    """Run the landscape probes from ``rec.step(labels=y, inputs=x)`` every ``every`` steps.

    Called by :func:`repdiag.attach` for ``loss_fn=...`` / ``landscape_every=...``; the probes
    run after steps 1, ``every + 1``, ``2 every + 1``, ... (counting completed steps, so the
    first step is always probed) on the batch passed to that ``step``, with the recorder's hooks
    paused. Their rows (``step`` = steps completed) join :meth:`Recorder.table`.

    Parameters
    ----------
    rec : Recorder
    loss_fn : callable
        ``loss_fn(model(x), y)`` -> scalar, usually the training criterion.
    every : int, optional
        Probe period in steps; default :data:`DEFAULT_EVERY` (100): a probe costs about
        ``len(step_sizes) + 1`` plus (number of parameter-owning modules + 2) forward-backward passes.
    optimizer : torch.optim.Optimizer, optional
        Whose step the earlier layers take in the covariate-shift probe (state never modified).
    **options
        ``probes`` (subset of ``("predictiveness", "covariate_shift", "hessian")``; default the
        first two), ``step_sizes``, ``lr`` (plain-SGD covariate shift without an optimizer),
        ``layers`` (covariate-shift modules), ``train`` (mode during probes, default True),
        ``hessian_iters`` (20), ``hessian_tol`` (1e-3).
    """
    if loss_fn is None or not callable(loss_fn):
        raise ConfigError(f"landscape probes need loss_fn=criterion (callable as loss_fn(model(x), y)); got "
                          f"{loss_fn!r}. Pass attach(model, loss_fn=torch.nn.CrossEntropyLoss(), landscape_every=100).")
    period = DEFAULT_EVERY if every is None else check_positive_int(every, "landscape_every")
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown landscape_options {unknown}; known: {list(_OPTIONS)}.")
    probes = options.get("probes", ("predictiveness", "covariate_shift"))
    if isinstance(probes, str):
        probes = (probes,)
    bad = [p for p in probes if p not in PROBES]
    if bad or not probes:
        raise ConfigError(f"landscape_options['probes'] must be a non-empty subset of {PROBES}; got {probes!r}.")
    etas = check_step_sizes(options.get("step_sizes"))
    lr = options.get("lr")
    if "covariate_shift" in probes:
        check_step_source(optimizer, lr)
    layers = options.get("layers")
    train = options.get("train", True)
    if train not in (True, False, None):
        raise ConfigError(f"landscape_options['train'] must be True, False or None; got {train!r}.")
    iters = check_positive_int(options.get("hessian_iters", 20), "hessian_iters")
    tol = float(options.get("hessian_tol", 1e-3))

    def callback(r: Any, ctx: Any) -> Iterable[Row]:
        if (ctx.step - 1) % period != 0:
            return []
        if ctx.inputs is None or ctx.labels is None:
            what = "inputs=x" if ctx.inputs is None else "labels=y"
            raise ConfigError(
                f"the landscape probe is due after step {ctx.step} but rec.step got no {what}: the probe evaluates "
                "loss_fn(model(x), y) on the batch just trained on. Call rec.step(labels=y, inputs=x)."
            )
        model = r.inner
        module = type(model).__name__
        rows: list[Row] = []
        with r.paused(), ProbeGuard(model, train=train) as guard:
            problem = Problem(model, loss_fn, (ctx.inputs, ctx.labels), guard)
            if "predictiveness" in probes:
                rows += predictiveness_rows(problem, etas, module=module)
            if "covariate_shift" in probes:
                rows += covariate_rows(problem, optimizer, None if lr is None else float(lr), layers)
            if "hessian" in probes:
                rows += hessian_rows(problem, iters=iters, tol=tol, module=module)
        return rows

    rec.add_step_callback(callback)
