"""Internal covariate shift as the change of a layer's gradient when the earlier layers update
(Santurkar et al. 2018, Definition 2.1): G vs G'."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from .._errors import ConfigError, LayerNotFoundError, RepdiagWarning, warn_undefined
from .._validation import check_nonneg_float
from ..metrics._registry import Row
from ..tables import make_table
from ._core import LossFn, Problem, diff_sq_norm, dot
from ._state import ProbeGuard

__all__ = ["covariate_shift", "covariate_rows", "check_step_source"]


def check_step_source(optimizer: Any, lr: Any) -> None:
    """Exactly one of ``optimizer`` and ``lr`` says how the earlier layers step."""
    if optimizer is None and lr is None:
        raise ConfigError("covariate_shift needs the update the earlier layers take: pass optimizer=opt (its real "
                          "step, its state untouched) or lr=... (plain SGD).")
    if optimizer is not None and lr is not None:
        raise ConfigError("pass optimizer=... or lr=..., not both: with an optimizer its own learning rate is used.")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError(f"optimizer must be a torch.optim.Optimizer; got {type(optimizer).__name__}.")
    if lr is not None and (check_nonneg_float(lr, "lr") == 0):
        raise ConfigError("lr must be > 0; got 0 (the earlier layers would not move and G' = G trivially).")


def _layer_order(problem: Problem) -> tuple[list[tuple[str, nn.Module, list[str]]], list[str]]:
    """Modules that own trainable parameters, in the order they first run, with their parameter
    names; plus the names of owners that never ran as a module call."""
    trainable = set(problem.names)
    owners: dict[int, tuple[str, nn.Module, list[str]]] = {}
    for name, mod in problem.model.named_modules():
        own = [f"{name}.{p}" if name else p for p, _ in mod.named_parameters(recurse=False)]
        own = [n for n in own if n in trainable]
        if own:
            owners[id(mod)] = (name, mod, own)
    order: list[int] = []

    def pre(mod: nn.Module, args: Any) -> None:
        if id(mod) not in order:
            order.append(id(mod))

    handles = [m.register_forward_pre_hook(pre) for _, m, _ in owners.values()]
    try:
        with torch.no_grad():
            problem.forward_loss({})
    finally:
        for h in handles:
            h.remove()
    ran = [owners[i] for i in order]
    never = [owners[i][0] for i in owners if i not in order]
    return ran, never


def _stepped(problem: Problem, g: dict[str, Tensor], optimizer: torch.optim.Optimizer | None,
             lr: float | None) -> dict[str, Tensor]:
    """The parameters after one update with gradient ``g``, computed on copies."""
    if optimizer is None:
        assert lr is not None
        with torch.no_grad():
            return {n: problem.params[n].detach() - lr * g[n] for n in problem.names}
    name_of = {id(p): n for n, p in problem.model.named_parameters()}
    memo: dict[int, Any] = {}
    clones: dict[str, Tensor] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            c = p.detach().clone().requires_grad_(p.requires_grad)
            memo[id(p)] = c
            n = name_of.get(id(p))
            if n is not None and n in g:
                c.grad = g[n].clone()
                clones[n] = c
    shadow = copy.deepcopy(optimizer, memo)
    try:
        shadow.step()
    except TypeError as exc:
        raise ConfigError(f"{type(optimizer).__name__}.step() cannot run without a closure ({exc}); covariate_shift "
                          "supports optimizers that step from .grad (SGD, Adam, ...). Pass lr=... instead.") from exc
    return {n: c.detach() for n, c in clones.items()}


def _same(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and bool(torch.equal(a, b))


def covariate_rows(problem: Problem, optimizer: torch.optim.Optimizer | None, lr: float | None,
                   layers: Sequence[str] | None = None) -> list[Row]:
    """Rows of :func:`covariate_shift` for an already-built :class:`Problem`."""
    order, never = _layer_order(problem)
    if never:
        warnings.warn(f"covariate_shift skips {len(never)} module(s) whose parameters are used outside their own "
                      f"forward call ({', '.join(never[:3])}): their position in the forward order is unknown.",
                      RepdiagWarning, stacklevel=3)
    if layers is not None:
        known = {name for name, _, _ in order}
        missing = [lay for lay in layers if lay not in known]
        if missing:
            raise LayerNotFoundError(f"covariate_shift layers {missing} are not modules owning trainable parameters "
                                     f"that run in forward; choose from {sorted(known)}.")
    loss0, grads = problem.loss_and_grad(problem.base(), problem.names)
    g = dict(zip(problem.names, grads))
    new = _stepped(problem, g, optimizer, lr)
    moved = {n for n, w in new.items() if not _same(w, problem.params[n].detach())}
    rows: list[Row] = []
    earlier: list[str] = []
    for depth, (name, mod, own) in enumerate(order):
        if layers is None or name in layers:
            G = [g[n] for n in own]
            if not any(n in moved for n in earlier):
                G2 = G  # nothing upstream moved: G' is G exactly
            else:
                values = {n: new[n] for n in earlier if n in moved}
                values.update(problem.base(own))
                _, G2 = problem.loss_and_grad(values, own)
            diff = float(diff_sq_norm(G, G2).sqrt())
            n1, n2 = float(dot(G, G).sqrt()), float(dot(G2, G2).sqrt())
            if n1 == 0:
                warn_undefined(f"ics_cos and ics_rel of layer {name!r}", "||G|| = 0 (the layer gets no gradient)")
            elif n2 == 0:
                warn_undefined(f"ics_cos of layer {name!r}", "||G'|| = 0 (no gradient after the earlier layers step)")
            cos = float(dot(G, G2)) / (n1 * n2) if n1 > 0 and n2 > 0 else float("nan")
            rel = diff / n1 if n1 > 0 else float("nan")
            common = {"layer": name, "module": type(mod).__name__, "depth": depth, "n": problem.n}
            rows += [{**common, "metric": "ics_l2", "value": diff},
                     {**common, "metric": "ics_cos", "value": cos if math.isnan(cos) else max(-1.0, min(1.0, cos))},
                     {**common, "metric": "ics_rel", "value": rel}]
        earlier += own
    return rows


def covariate_shift(
    model: nn.Module,
    loss_fn: LossFn,
    batch: Any,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float | None = None,
    *,
    layers: Sequence[str] | None = None,
    train: bool | None = True,
) -> pd.DataFrame:
    """Internal covariate shift per layer: the gradient of a layer before and after the earlier
    layers take their update on the same batch.

    For the modules that own trainable parameters, in forward order ``1..k`` (a conv, its BN,
    the next conv, ...), with ``W_i`` the parameters of module ``i``:

    ``G  = grad_{W_i} L(W_1, ..., W_k)``,
    ``G' = grad_{W_i} L(W_1', ..., W_{i-1}', W_i, ..., W_k)``

    where ``W_j'`` are the parameters after one update with the full gradient on ``batch``: the
    optimizer's real step (a deep copy of ``optimizer`` with its state takes it, so momentum and
    Adam moments count) or plain SGD ``W - lr g``. Rows per module: ``ics_l2 = ||G - G'||_2``,
    ``ics_cos = cos(G, G')`` and ``ics_rel = ||G - G'|| / ||G||``. For the first module
    ``G' = G`` exactly.

    Costs at most ``k + 2`` forward(-backward) passes (one to find the order). Nothing the caller
    holds changes: parameters, ``.grad``, buffers, modes, the RNG and the optimizer and its state
    are left bitwise as they were; every pass rewinds the RNG (same dropout masks).

    Parameters
    ----------
    model : nn.Module
    loss_fn : callable
        ``loss_fn(model(inputs), targets)`` -> scalar tensor.
    batch : tuple
        ``(inputs, targets)``.
    optimizer : torch.optim.Optimizer, optional
        Whose step the earlier layers take (one that steps from ``.grad``; not LBFGS).
    lr : float, optional
        Plain SGD step size, when no optimizer is given. Exactly one of the two is required.
    layers : sequence of str, optional
        Module names to report (all by default); the earlier layers move regardless.
    train : bool or None
        Mode during the probe (see :func:`gradient_predictiveness`).

    Returns
    -------
    DataFrame
        Tidy rows; ``layer`` the module path, ``depth`` its position among parameter-owning
        modules in forward order, ``n`` the batch size.

    Undefined cases: ``G = 0`` or ``G' = 0`` makes the cosine NaN, ``G = 0`` the relative
    difference (each with a :class:`repdiag.RepdiagWarning`).

    References
    ----------
    Santurkar, Tsipras, Ilyas, Madry, *How Does Batch Normalization Help Optimization?*,
    NeurIPS 2018 (arXiv 1805.11604), Definition 2.1.

    Examples
    --------
    >>> import torch
    >>> torch.manual_seed(0) and None
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    >>> t = covariate_shift(model, torch.nn.CrossEntropyLoss(), (x, y), lr=0.1)
    >>> t[t.metric == "ics_l2"][["layer", "depth"]].values.tolist()
    [['0', 0], ['2', 1]]
    >>> float(t[(t.metric == "ics_l2") & (t.layer == "0")].value.iloc[0])
    0.0
    """
    check_step_source(optimizer, lr)
    if layers is not None and (isinstance(layers, str) or not all(isinstance(s, str) for s in layers)):
        raise ConfigError(f"layers must be a list of module names; got {layers!r}.")
    with ProbeGuard(model, train=train) as guard:
        problem = Problem(model, loss_fn, batch, guard)
        rows = covariate_rows(problem, optimizer, None if lr is None else float(lr), layers)
    return make_table(rows)
