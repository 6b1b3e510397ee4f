"""Loss landscape along the gradient: loss range, gradient predictiveness, effective
beta-smoothness (Santurkar et al. 2018, Sec. 3.1 and Fig. 4)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn

from .._errors import ConfigError, warn_undefined
from ..metrics._registry import Row
from ..tables import MODEL_LAYER, make_table
from ._core import LossFn, Problem, diff_sq_norm, sq_norm
from ._state import ProbeGuard

__all__ = ["gradient_predictiveness", "predictiveness_rows", "DEFAULT_STEP_SIZES", "check_step_sizes"]

DEFAULT_STEP_SIZES: tuple[float, ...] = tuple(round(0.05 * (i + 1), 10) for i in range(8))
"""``linspace(0.05, 0.4, 8)``: moves of up to 0.4 times the gradient (RESEARCH.md section 2)."""


def check_step_sizes(step_sizes: Any) -> list[float]:
    """Validate a grid of step sizes: a non-empty sequence of finite numbers > 0."""
    if step_sizes is None:
        return list(DEFAULT_STEP_SIZES)
    if isinstance(step_sizes, torch.Tensor):
        step_sizes = step_sizes.flatten().tolist()
    try:
        etas = [float(e) for e in step_sizes]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"step_sizes must be a sequence of numbers > 0; got {step_sizes!r}. "
                          "E.g. step_sizes=[0.05, 0.1, 0.2, 0.4].") from exc
    if not etas or any(not math.isfinite(e) or e <= 0 for e in etas):
        raise ConfigError(f"step_sizes must be a non-empty sequence of finite numbers > 0; got {step_sizes!r}. "
                          "E.g. step_sizes=[0.05, 0.1, 0.2, 0.4].")
    return etas


def predictiveness_rows(problem: Problem, step_sizes: Sequence[float], *, module: str) -> list[Row]:
    """Rows of :func:`gradient_predictiveness` for an already-built :class:`Problem`."""
    names = problem.names
    loss0, g = problem.loss_and_grad(problem.base(), names)
    gnorm = float(sq_norm(g).sqrt())
    losses = [loss0]
    changes: list[float] = []
    for eta in step_sizes:
        with torch.no_grad():
            moved = {n: (problem.params[n].detach() - eta * gi).requires_grad_(True) for n, gi in zip(names, g)}
        loss_e, g_e = problem.loss_and_grad(moved, names)
        losses.append(loss_e)
        changes.append(float(diff_sq_norm(g_e, g).sqrt()))
        del moved, g_e
    n = problem.n
    common = {"layer": MODEL_LAYER, "module": module, "depth": -1, "n": n}
    rows: list[Row] = [{**common, "metric": "grad_norm", "value": gnorm}]
    for eta, loss in zip([0.0, *step_sizes], losses):
        rows.append({**common, "metric": "loss", "value": loss, "step_size": eta})
    if not all(math.isfinite(v) for v in losses):
        warn_undefined("the loss range", "the loss is NaN or Inf at some step size (the step diverges); "
                       "use smaller step_sizes")
        loss_range = float("nan")
    else:
        loss_range = max(losses) - min(losses)
    rows.append({**common, "metric": "loss_range", "value": loss_range})
    if loss0 == 0 or not math.isfinite(loss0):
        if math.isfinite(loss_range):
            warn_undefined("loss_range_rel", f"the loss at the current weights is {loss0}")
        rows.append({**common, "metric": "loss_range_rel", "value": float("nan")})
    else:
        rows.append({**common, "metric": "loss_range_rel", "value": loss_range / abs(loss0)})
    if gnorm == 0 or not math.isfinite(gnorm):
        warn_undefined("grad_change_rel and beta_smoothness",
                       f"the gradient norm is {gnorm} (a stationary point or a diverged model)")
    ok = gnorm > 0 and math.isfinite(gnorm)
    betas: list[float] = []
    for eta, ch in zip(step_sizes, changes):
        rel = ch / gnorm if ok else float("nan")
        beta = ch / (eta * gnorm) if ok else float("nan")
        betas.append(beta)
        rows.append({**common, "metric": "grad_change", "value": ch, "step_size": eta})
        rows.append({**common, "metric": "grad_change_rel", "value": rel, "step_size": eta})
        rows.append({**common, "metric": "beta_local", "value": beta, "step_size": eta})
    finite_betas = [b for b in betas if math.isfinite(b)]
    beta_max = max(finite_betas) if ok and len(finite_betas) == len(betas) else float("nan")
    if ok and len(finite_betas) != len(betas):
        warn_undefined("beta_smoothness", "the gradient is NaN or Inf at some step size; use smaller step_sizes")
    rows.append({**common, "metric": "beta_smoothness", "value": beta_max})
    return rows


def gradient_predictiveness(
    model: nn.Module,
    loss_fn: LossFn,
    batch: Any,
    step_sizes: Sequence[float] | None = None,
    *,
    train: bool | None = True,
) -> pd.DataFrame:
    """Loss range, gradient predictiveness and effective beta-smoothness along the gradient.

    With ``w`` the trainable parameters, ``g = grad L(w)`` the full gradient on ``batch`` and
    ``eta`` each step size:

    - ``loss`` (column ``step_size``): ``L(w - eta g)``; ``step_size = 0`` is ``L(w)``.
    - ``loss_range``: ``max - min`` of ``L`` over ``{0} + step_sizes``; ``loss_range_rel``
      divides it by ``|L(w)|``.
    - ``grad_change`` (per step size): ``||grad L(w - eta g) - g||_2``, the *gradient
      predictiveness* (small = predictive); ``grad_change_rel`` divides it by ``||g||``.
    - ``beta_local`` (per step size): ``||grad L(w - eta g) - g|| / ||eta g||``;
      ``beta_smoothness``: its maximum over the grid, the *effective beta-smoothness*.
    - ``grad_norm``: ``||g||``.

    A probe with ``k`` step sizes costs ``k + 1`` forward-backward passes. The model is
    evaluated functionally (:func:`torch.func.functional_call`) on cloned buffers: parameters,
    ``.grad``, buffers (BN running statistics), modes and the RNG state are left bitwise as they
    were. Every pass rewinds the RNG, so dropout draws the same mask at each ``w``.

    Parameters
    ----------
    model : nn.Module
        Its trainable parameters (``requires_grad``) are ``w``; frozen ones stay fixed.
    loss_fn : callable
        ``loss_fn(model(inputs), targets)`` -> scalar tensor.
    batch : tuple
        ``(inputs, targets)``; ``inputs`` a tensor, a tuple (``model(*inputs)``) or a dict.
    step_sizes : sequence of float > 0, optional
        The grid of ``eta``; default ``linspace(0.05, 0.4, 8)`` (RESEARCH.md section 2; the paper
        moves up to about 0.4 times the gradient). Scale it to your learning rate if you compare
        against training steps, e.g. ``lr * np.arange(1, 9)``.
    train : bool or None
        Put the model in train mode during the probe (default; BN uses batch statistics as in
        training, its running statistics still do not change); ``False`` eval mode; ``None``
        keeps the modes as they are. Modes are restored afterwards.

    Returns
    -------
    DataFrame
        Tidy rows, layer ``"(model)"``, depth -1, ``n`` the batch size, parameter column
        ``step_size`` (NaN for grid-wide rows).

    Undefined cases: ``||g|| = 0`` makes the relative rows and beta NaN; a non-finite loss along
    the grid makes the range NaN (each with a :class:`repdiag.RepdiagWarning`).

    References
    ----------
    Santurkar, Tsipras, Ilyas, Madry, *How Does Batch Normalization Help Optimization?*,
    NeurIPS 2018 (arXiv 1805.11604), Sec. 3.1.

    Examples
    --------
    >>> import torch
    >>> torch.manual_seed(0) and None
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    >>> t = gradient_predictiveness(model, torch.nn.CrossEntropyLoss(), (x, y), step_sizes=[0.1, 0.2])
    >>> sorted(set(t["metric"]))[:4]
    ['beta_local', 'beta_smoothness', 'grad_change', 'grad_change_rel']
    >>> bool((t.loc[t.metric == "beta_smoothness", "value"] >= 0).all())
    True
    """
    etas = check_step_sizes(step_sizes)
    with ProbeGuard(model, train=train) as guard:
        problem = Problem(model, loss_fn, batch, guard)
        rows = predictiveness_rows(problem, etas, module=type(model).__name__)
    return make_table(rows)
