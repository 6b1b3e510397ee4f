"""Top Hessian eigenvalue by power iteration on Hessian-vector products: a second smoothness
measure beside the effective beta-smoothness."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from .._errors import warn_undefined
from .._validation import check_nonneg_float, check_positive_int
from ..metrics._registry import Row
from ..tables import MODEL_LAYER, make_table
from ._core import LossFn, Problem, dot, sq_norm
from ._state import ProbeGuard

__all__ = ["hessian_top_eigenvalue", "hessian_rows"]


def hessian_rows(problem: Problem, *, iters: int = 20, tol: float = 1e-3, seed: int = 0, module: str) -> list[Row]:
    """Rows of :func:`hessian_top_eigenvalue` for an already-built :class:`Problem`."""
    values = problem.base()
    params = [values[n] for n in problem.names]
    loss = problem.forward_loss(values)
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    pairs = [(p, g) for p, g in zip(params, grads) if g is not None and g.requires_grad]
    lam = float("nan")
    done = 0
    if pairs:
        gen = torch.Generator(device=pairs[0][0].device).manual_seed(seed)
        v = [torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype) for p, _ in pairs]
        scale = float(sq_norm(v).sqrt())
        v = [t / scale for t in v]
        prev = None
        for done in range(1, iters + 1):
            hv: tuple[Tensor | None, ...] = torch.autograd.grad([g for _, g in pairs], [p for p, _ in pairs],
                                                                grad_outputs=v, retain_graph=True, allow_unused=True)
            hvs = [torch.zeros_like(p) if h is None else h.detach() for (p, _), h in zip(pairs, hv)]
            lam = float(dot(v, hvs))
            norm = float(sq_norm(hvs).sqrt())
            if norm == 0 or norm != norm:
                break
            v = [h / norm for h in hvs]
            if prev is not None and abs(lam - prev) <= tol * max(abs(lam), 1e-12):
                break
            prev = lam
    if not pairs or lam != lam:
        warn_undefined("hessian_top_eig", "the loss has no second derivative in the trainable parameters "
                                          "or it is not finite")
    return [{"layer": MODEL_LAYER, "module": module, "depth": -1, "metric": "hessian_top_eig", "value": lam,
             "n": problem.n, "iters": done}]


def hessian_top_eigenvalue(
    model: nn.Module,
    loss_fn: LossFn,
    batch: Any,
    *,
    iters: int = 20,
    tol: float = 1e-3,
    seed: int = 0,
    train: bool | None = True,
) -> pd.DataFrame:
    """Eigenvalue of largest magnitude of the loss Hessian in the trainable parameters.

    Power iteration ``v <- H v / ||H v||`` with Hessian-vector products by double
    backpropagation; the estimate is the Rayleigh quotient ``lambda = v^T H v`` (``||v|| = 1``).
    It stops after ``iters`` products or when ``lambda`` changes by less than ``tol`` relative.
    The start vector comes from a private generator seeded with ``seed`` (the global RNG is not
    used); the model is left bitwise as it was (see :func:`gradient_predictiveness`).

    Returns one tidy row ``hessian_top_eig`` (layer ``"(model)"``) with the products used in
    column ``iters``. NaN with a :class:`repdiag.RepdiagWarning` when the loss has no second
    derivative (a piecewise-linear net with a linear loss) or is not finite.

    References
    ----------
    Santurkar et al., NeurIPS 2018, discuss beta-smoothness; the Hessian's top eigenvalue is
    the standard local curvature measure (Ghorbani, Krishnan, Xiao, ICML 2019).

    Examples
    --------
    >>> import torch
    >>> class Quad(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.w = torch.nn.Parameter(torch.ones(3))
    ...     def forward(self, x):
    ...         return self.w
    >>> a = torch.tensor([1.0, 2.0, 5.0])
    >>> t = hessian_top_eigenvalue(Quad(), lambda w, _: 0.5 * (a * w * w).sum(), (torch.zeros(1), None))
    >>> round(float(t.value.iloc[0]), 3)
    5.0
    """
    check_positive_int(iters, "iters")
    check_nonneg_float(tol, "tol")
    with ProbeGuard(model, train=train) as guard:
        problem = Problem(model, loss_fn, batch, guard)
        rows = hessian_rows(problem, iters=iters, tol=tol, seed=seed, module=type(model).__name__)
    return make_table(rows)
