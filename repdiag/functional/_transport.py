"""Earth Mover (Wasserstein) distances between two activation distributions.

Kernels for Huang & Yu, *An Internal Covariate Shift Bounding Algorithm for Deep Neural Networks
by Unitizing Layers' Outputs* (CVPR 2020, arXiv 2001.02814): the EM distance between a layer's
output distributions at two times, its exact value, estimators and the two same-input bounds

    ||E y_t - E y_t'||  <=  W1(P_t, P_t')  <=  E_x ||y_t(x) - y_t'(x)||.

This module holds the exact distance (:func:`emd`) and the two bounds; the 1-D and sliced
estimators live in ``_sliced`` and are re-exported here. Results keep the inputs' device and
dtype (half precision is computed in float32).
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from torch import Tensor

from .._errors import ConfigError, NonFiniteError, RepdiagError, ShapeError
from .._validation import check_finite, check_positive_int, check_samples, check_same_features
from ._ot_inputs import check_p, check_pair, check_paired, check_weights, compute_dtype
from ._precision import rescaled
from ._sliced import sliced_wasserstein, wasserstein_1d

__all__ = ["wasserstein_1d", "sliced_wasserstein", "emd", "coupling_bound", "first_moment_bound"]

# the estimators live in ``_sliced``; this module stays the family's home, and its doctests cover them
__test__ = {"wasserstein_1d": wasserstein_1d, "sliced_wasserstein": sliced_wasserstein}

EMD_MAX_POINTS = 5000
"""Default largest point cloud :func:`emd` solves exactly (about 10-20 s on one CPU core)."""


def _ot_cost_matrix(a: Tensor, b: Tensor, p: float) -> Tensor:
    c = torch.cdist(a.to(torch.float64), b.to(torch.float64), compute_mode="donot_use_mm_for_euclid_dist")
    return c if p == 1 else c.pow_(p)


def emd(
    a: Any,
    b: Any,
    p: float = 1,
    *,
    a_weights: Any = None,
    b_weights: Any = None,
    max_points: int = EMD_MAX_POINTS,
    approx: Literal["sliced"] | None = None,
    n_projections: int = 128,
    seed: int = 0,
    num_iter_max: int | None = None,
) -> Tensor:
    """Exact Wasserstein distance between two point clouds (optimal transport, Euclidean ground cost).

        W_p(a, b) = ( min_{P in U(w_a, w_b)} sum_ij P_ij ||a_i - b_j||_2^p )^(1/p)

    over couplings P with marginals the sample weights (uniform by default). Equal sizes with
    uniform weights are solved as an assignment problem (an optimal plan is a permutation;
    :func:`scipy.optimize.linear_sum_assignment`, faster than network simplex); otherwise POT's
    network simplex ``ot.emd2`` runs with a raised iteration limit, and a run that stops before
    optimality raises instead of returning a wrong value. The cost matrix is computed in float64.

    Parameters
    ----------
    a : tensor of shape (n, d)
    b : tensor of shape (m, d)
    p : float, default 1
    a_weights, b_weights : tensor of shape (n,) / (m,), optional
    max_points : int, default 5000
        Largest ``max(n, m)`` solved exactly (time grows about cubically). Larger inputs raise
        :class:`~repdiag.ConfigError` unless ``approx="sliced"``.
    approx : {None, "sliced"}, default None
        ``"sliced"``: above ``max_points`` return :func:`sliced_wasserstein` (a lower bound of
        W_p) with ``n_projections`` and ``seed`` instead of raising.
    num_iter_max : int, optional
        Network-simplex iteration limit; default ``max(10**6, 50 * n * m)``.

    Returns
    -------
    Tensor, 0-d, on ``a``'s device in the promoted input dtype.

    Raises
    ------
    ConfigError
        Inputs above ``max_points`` without ``approx``.
    RepdiagError
        The network simplex stopped before optimality (raise ``num_iter_max``).

    References
    ----------
    Flamary et al., *POT: Python Optimal Transport*, JMLR 22 (2021); Huang & Yu (CVPR 2020).

    Examples
    --------
    >>> import torch
    >>> a = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    >>> emd(a, torch.tensor([[1.0, 0.0], [0.0, 2.0]]))  # moves (0,0)->(0,2): (0 + 2) / 2
    tensor(1.)
    """
    p = check_p(p)
    a, b, out_dtype = check_pair(a, b)
    n, m = a.shape[0], b.shape[0]
    max_points = check_positive_int(max_points, "max_points")
    if approx not in (None, "sliced"):
        raise ConfigError(f"approx must be None (exact or raise) or 'sliced'; got {approx!r}.")
    wa = check_weights(a_weights, n, "a_weights", a.device)
    wb = check_weights(b_weights, m, "b_weights", a.device)
    if max(n, m) > max_points:
        if approx == "sliced":
            return sliced_wasserstein(a, b, n_projections, p, seed, a_weights=wa, b_weights=wb).to(out_dtype)
        raise ConfigError(
            f"emd solves exact optimal transport up to max_points={max_points} points per side; got n={n}, m={m} "
            f"(an {n} x {m} problem takes minutes to hours). Use sliced_wasserstein(a, b) (a lower bound), "
            "pass approx='sliced', subsample the rows, or raise max_points if you mean to wait."
        )
    cost = _ot_cost_matrix(a, b, p).cpu().numpy()
    import numpy as np

    if not np.isfinite(cost).all():  # only non-finite inputs make a non-finite cost: name them
        check_finite(a, "a")
        check_finite(b, "b")
        raise NonFiniteError(f"the distances ||a_i - b_j||^{p:g} overflow float64; rescale a and b first.")
    if wa is None and wb is None and n == m:
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(cost)
        value = float(cost[rows, cols].mean())
    else:
        import ot

        ua = np.full(n, 1.0 / n) if wa is None else wa.cpu().numpy()
        ub = np.full(m, 1.0 / m) if wb is None else wb.cpu().numpy()
        iters = max(10**6, 50 * n * m) if num_iter_max is None else check_positive_int(num_iter_max, "num_iter_max")
        with warnings.catch_warnings():  # POT warns on non-convergence; we raise instead
            warnings.simplefilter("ignore", UserWarning)
            value, log = ot.emd2(ua, ub, cost, numItermax=iters, log=True)
        if int(log["result_code"]) != 1:
            raise RepdiagError(
                f"POT's network simplex stopped before optimality on an {n} x {m} problem "
                f"(result code {log['result_code']}: {log.get('warning')}); its value would be wrong. "
                f"Raise num_iter_max (now {iters}) or use sliced_wasserstein."
            )
        value = float(value)
    out = torch.tensor(max(value, 0.0), dtype=torch.float64, device=a.device)
    return (out if p == 1 else out.pow(1.0 / p)).to(out_dtype)


def coupling_bound(y_t: Any, y_t2: Any) -> Tensor:
    """Same-input coupling upper bound of the EM distance between two output distributions.

        W_1(P_t, P_t') <= (1/n) sum_i ||y_t(x_i) - y_t'(x_i)||_2

    Pairing each input's two outputs is one feasible transport plan, so its cost bounds the
    optimal one (Huang & Yu, CVPR 2020). Row i of both matrices must come from input i.

    Parameters
    ----------
    y_t, y_t2 : tensor of shape (n, d)
        A layer's outputs on the same n inputs at two times.

    Returns
    -------
    Tensor, 0-d, on the inputs' device and dtype.

    Examples
    --------
    >>> import torch
    >>> coupling_bound(torch.zeros(2, 2), torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
    tensor(3.)
    """
    y_t, y_t2, out_dtype = check_paired(y_t, y_t2)
    check_finite(y_t, "y_t")
    check_finite(y_t2, "y_t2")
    (y_t, y_t2), s = rescaled(y_t, y_t2)  # the norm squares: 1e20 would overflow float32
    return (torch.linalg.vector_norm(y_t - y_t2, dim=1).mean() * s).to(out_dtype)


def first_moment_bound(y_t: Any, y_t2: Any) -> Tensor:
    """First-moment lower bound of the EM distance between two output distributions.

        ||mean y_t - mean y_t'||_2 <= W_1(P_t, P_t')

    (Jensen: for any coupling, ``E||y - y'|| >= ||E y - E y'||``). The two sets need not
    share inputs or sizes: ``(n, d)`` and ``(m, d)``.

    Returns
    -------
    Tensor, 0-d, on the inputs' device and dtype.

    Examples
    --------
    >>> import torch
    >>> first_moment_bound(torch.zeros(2, 2), torch.tensor([[3.0, 4.0], [3.0, 4.0]]))
    tensor(5.)
    """
    a = check_samples(y_t, "y_t")
    b = check_samples(y_t2, "y_t2")
    check_same_features(a, b, ("y_t", "y_t2"))
    if a.device != b.device:
        raise ShapeError(f"y_t and y_t2 must be on the same device; got {a.device} and {b.device}.")
    out_dtype = torch.promote_types(a.dtype, b.dtype)
    check_finite(a, "y_t")
    check_finite(b, "y_t2")
    (a, b), s = rescaled(a.to(compute_dtype(a, b)), b.to(compute_dtype(a, b)))  # the norm squares
    return (torch.linalg.vector_norm(a.mean(0) - b.mean(0)) * s).to(out_dtype)
