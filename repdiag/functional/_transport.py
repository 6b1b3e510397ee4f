"""Earth Mover (Wasserstein) distances between two activation distributions.

Kernels for Huang & Yu, *An Internal Covariate Shift Bounding Algorithm for Deep Neural Networks
by Unitizing Layers' Outputs* (CVPR 2020, arXiv 2001.02814): the EM distance between a layer's
output distributions at two times, its exact value, estimators and the two same-input bounds

    ||E y_t - E y_t'||  <=  W1(P_t, P_t')  <=  E_x ||y_t(x) - y_t'(x)||.

Results keep the inputs' device and dtype (half precision is computed in float32).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import torch
from torch import Tensor

from .._errors import ConfigError, NonFiniteError, RepdiagError, ShapeError
from .._validation import check_finite, check_positive_int, check_samples, check_same_features, describe

__all__ = ["wasserstein_1d", "sliced_wasserstein", "emd", "coupling_bound", "first_moment_bound"]

EMD_MAX_POINTS = 5000
"""Default largest point cloud :func:`emd` solves exactly (about 10-20 s on one CPU core)."""


def _compute_dtype(*xs: Tensor) -> torch.dtype:
    dt = xs[0].dtype
    for x in xs[1:]:
        dt = torch.promote_types(dt, x.dtype)
    return dt if dt in (torch.float32, torch.float64) else torch.float32


def _pair(a: Any, b: Any) -> tuple[Tensor, Tensor, torch.dtype]:
    """Validate two sample matrices; return them in a common compute dtype and the output dtype."""
    a = check_samples(a, "a")
    b = check_samples(b, "b")
    check_same_features(a, b)
    if a.device != b.device:
        raise ShapeError(f"a and b must be on the same device; got {a.device} and {b.device}. Move one: b.to(a.device).")
    if a.is_complex() or b.is_complex():
        raise ShapeError(f"a and b must be real; got {a.dtype} and {b.dtype}.")
    out_dtype = torch.promote_types(a.dtype, b.dtype)
    ct = _compute_dtype(a, b)
    a, b = a.to(ct), b.to(ct)
    return a, b, out_dtype


def _check_result(value: Tensor, a: Tensor, b: Tensor) -> None:
    """A non-finite result can only come from non-finite inputs: say which (one cheap check on
    the small result instead of two passes over the inputs)."""
    if not bool(torch.isfinite(value).all()):
        check_finite(a, "a")
        check_finite(b, "b")


def _check_p(p: Any) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or p < 1:
        raise ConfigError(f"p must be a finite number >= 1 (1 for W1, 2 for W2); got {p!r}.")
    return float(p)


def _check_weights(w: Any, n: int, name: str, device: torch.device) -> Tensor | None:
    """``None`` or normalised float64 weights ``(n,)`` on ``device``."""
    if w is None:
        return None
    if not isinstance(w, Tensor):
        try:
            w = torch.as_tensor(w)
        except Exception as exc:  # noqa: BLE001 - any conversion failure is a user error
            raise ShapeError(f"{name} must be a 1-D tensor of {n} sample weights; got {describe(w)}.") from exc
    if w.ndim != 1 or w.shape[0] != n:
        raise ShapeError(f"{name} must be a 1-D tensor of {n} sample weights (one per row); got shape {tuple(w.shape)}.")
    w = w.to(device=device, dtype=torch.float64)
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ConfigError(f"{name} must be finite and >= 0; got min {float(w.min())}. Pass non-negative weights.")
    total = float(w.sum())
    if total <= 0:
        raise ConfigError(f"{name} must have a positive sum; got {total}. Give at least one sample weight > 0.")
    return w / total


def _sorted_columns(x: Tensor) -> Tensor:
    """Each column of ``x`` sorted. On CPU (no autograd) NumPy's SIMD sort is several times faster
    than ``torch.sort``; elsewhere ``torch.sort``."""
    if x.device.type == "cpu" and not x.requires_grad and x.dtype in (torch.float32, torch.float64):
        import numpy as np

        return torch.from_numpy(np.sort(x.numpy(), axis=0))
    return torch.sort(x, dim=0).values


def _wpp_1d(a: Tensor, b: Tensor, wa: Tensor | None, wb: Tensor | None, p: float) -> Tensor:
    """Per column ``int_0^1 |F_a^-1(u) - F_b^-1(u)|^p du`` (W_p^p), a (n, k), b (m, k) -> (k,)."""
    n, m = a.shape[0], b.shape[0]
    if wa is None and wb is None and n == m:  # equal uniform sizes: the quantiles pair sorted rows
        diff = (_sorted_columns(a) - _sorted_columns(b)).abs_()
        return (diff if p == 1 else diff.pow_(p)).mean(dim=0)
    dev = a.device
    if wa is None and wb is None:  # one quantile grid serves every column
        sa, sb = _sorted_columns(a), _sorted_columns(b)
        ca = torch.arange(1, n + 1, device=dev, dtype=torch.float64) / n
        cb = torch.arange(1, m + 1, device=dev, dtype=torch.float64) / m
        qs = torch.sort(torch.cat([ca, cb])).values
        ja = torch.searchsorted(ca, qs).clamp_(max=n - 1)
        jb = torch.searchsorted(cb, qs).clamp_(max=m - 1)
        qa, qb = sa[ja], sb[jb]
        delta = torch.diff(qs, prepend=qs.new_zeros(1))[:, None]
    else:  # sample weights follow each column's own sort order
        sa, ia = torch.sort(a, dim=0)
        sb, ib = torch.sort(b, dim=0)
        wa_ = torch.full((n,), 1.0 / n, device=dev, dtype=torch.float64) if wa is None else wa
        wb_ = torch.full((m,), 1.0 / m, device=dev, dtype=torch.float64) if wb is None else wb
        ca = torch.cumsum(wa_[ia], dim=0).T.contiguous()  # (k, n)
        cb = torch.cumsum(wb_[ib], dim=0).T.contiguous()  # (k, m)
        qs = torch.sort(torch.cat([ca, cb], dim=1), dim=1).values  # (k, n + m)
        ja = torch.searchsorted(ca, qs).clamp_(max=n - 1).T  # (n + m, k)
        jb = torch.searchsorted(cb, qs).clamp_(max=m - 1).T
        qa, qb = sa.gather(0, ja), sb.gather(0, jb)
        delta = torch.diff(qs, dim=1, prepend=qs.new_zeros(qs.shape[0], 1)).T
    diff = (qa - qb).abs_()
    if p != 1:
        diff = diff.pow_(p)
    return (delta.to(diff.dtype) * diff).sum(dim=0)


def wasserstein_1d(a: Any, b: Any, a_weights: Any = None, b_weights: Any = None, *, p: float = 1) -> Tensor:
    """Per-unit 1-D Wasserstein distance between the columns of two sample matrices.

    For each unit j, with ``F_a^-1``, ``F_b^-1`` the empirical quantile functions of column j,

        W_p(a[:, j], b[:, j]) = ( int_0^1 |F_a^-1(u) - F_b^-1(u)|^p du )^(1/p)

    computed exactly for any ``n`` and ``m`` by merging the two quantile grids, vectorised over
    units (one sort per column). For ``p = 1`` it equals :func:`scipy.stats.wasserstein_distance`
    (the area between the two CDFs).

    Parameters
    ----------
    a : tensor of shape (n, d)
    b : tensor of shape (m, d)
        Samples of the two distributions, one column per unit.
    a_weights, b_weights : tensor of shape (n,) / (m,), optional
        Non-negative sample weights (normalised to sum 1); uniform when omitted.
    p : float, default 1
        Order of the distance (>= 1).

    Returns
    -------
    Tensor of shape (d,)
        On ``a``'s device, in the promoted dtype of ``a`` and ``b``.

    References
    ----------
    Peyré & Cuturi, *Computational Optimal Transport* (2019), Remark 2.30; Huang & Yu (CVPR 2020).

    Examples
    --------
    >>> import torch
    >>> a = torch.tensor([[0.0, 1.0], [1.0, 3.0]])
    >>> wasserstein_1d(a, a + torch.tensor([2.0, -0.5]))
    tensor([2.0000, 0.5000])
    """
    p = _check_p(p)
    a, b, out_dtype = _pair(a, b)
    wa = _check_weights(a_weights, a.shape[0], "a_weights", a.device)
    wb = _check_weights(b_weights, b.shape[0], "b_weights", a.device)
    w = _wpp_1d(a, b, wa, wb, p)
    _check_result(w, a, b)
    return (w if p == 1 else w.pow(1.0 / p)).to(out_dtype)


def _random_projections(d: int, n_projections: int, seed: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    theta = torch.randn((d, n_projections), generator=g, device=device, dtype=dtype)
    return theta / torch.linalg.vector_norm(theta, dim=0, keepdim=True)


def sliced_wasserstein(
    a: Any,
    b: Any,
    n_projections: int = 128,
    p: float = 1,
    seed: int = 0,
    projections: Any = None,
    *,
    a_weights: Any = None,
    b_weights: Any = None,
) -> Tensor:
    """Sliced Wasserstein distance: the 1-D distance averaged over random directions.

        SW_p(a, b) = ( (1/L) sum_l W_p^p(a theta_l, b theta_l) )^(1/p)

    with directions ``theta_l`` uniform on the unit sphere (Gaussian columns normalised to norm 1) drawn
    from a ``torch.Generator`` seeded with ``seed`` on the inputs' device, so equal seeds give equal
    results. Each 1-D distance is exact (:func:`wasserstein_1d`). Same definition as POT's
    ``ot.sliced_wasserstein_distance``. Since projections are 1-Lipschitz, ``SW_p <= W_p``.

    Parameters
    ----------
    a : tensor of shape (n, d)
    b : tensor of shape (m, d)
    n_projections : int, default 128
        Number of random directions L (ignored when ``projections`` is given).
    p : float, default 1
    seed : int, default 0
    projections : tensor of shape (d, L), optional
        Directions to use instead of random ones (columns; used as given, not renormalised).
    a_weights, b_weights : tensor of shape (n,) / (m,), optional
        Sample weights; uniform when omitted.

    Returns
    -------
    Tensor, 0-d, on ``a``'s device in the promoted input dtype.

    References
    ----------
    Bonneel, Rabin, Peyré, Pfister, *Sliced and Radon Wasserstein Barycenters of Measures* (2015).

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(50, 3)
    >>> float(sliced_wasserstein(x, x))
    0.0
    >>> e = torch.tensor([[1.0], [0.0]])  # one direction, the first axis
    >>> sliced_wasserstein(torch.zeros(4, 2), torch.full((4, 2), 3.0), projections=e)
    tensor(3.)
    """
    p = _check_p(p)
    a, b, out_dtype = _pair(a, b)
    d = a.shape[1]
    if projections is None:
        n_projections = check_positive_int(n_projections, "n_projections")
        theta = _random_projections(d, n_projections, int(seed), a.device, a.dtype)
    else:
        theta = projections if isinstance(projections, Tensor) else torch.as_tensor(projections)
        if theta.ndim != 2 or theta.shape[0] != d or theta.shape[1] < 1:
            raise ShapeError(f"projections must have shape (d, n_projections) = ({d}, L); got {tuple(theta.shape)}. "
                             "Columns are the directions (POT's layout).")
        theta = theta.to(device=a.device, dtype=a.dtype)
    wa = _check_weights(a_weights, a.shape[0], "a_weights", a.device)
    wb = _check_weights(b_weights, b.shape[0], "b_weights", a.device)
    w = _wpp_1d(a @ theta, b @ theta, wa, wb, p).mean()
    _check_result(w, a, b)
    return (w if p == 1 else w.pow(1.0 / p)).to(out_dtype)


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
    p = _check_p(p)
    a, b, out_dtype = _pair(a, b)
    n, m = a.shape[0], b.shape[0]
    max_points = check_positive_int(max_points, "max_points")
    if approx not in (None, "sliced"):
        raise ConfigError(f"approx must be None (exact or raise) or 'sliced'; got {approx!r}.")
    wa = _check_weights(a_weights, n, "a_weights", a.device)
    wb = _check_weights(b_weights, m, "b_weights", a.device)
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


def _paired(y_t: Any, y_t2: Any) -> tuple[Tensor, Tensor, torch.dtype]:
    y_t = check_samples(y_t, "y_t")
    y_t2 = check_samples(y_t2, "y_t2")
    if y_t.shape != y_t2.shape:
        raise ShapeError(
            f"y_t and y_t2 must be the same inputs' outputs at two times, with equal shapes; got "
            f"{tuple(y_t.shape)} and {tuple(y_t2.shape)}. Row i of both must come from input i."
        )
    if y_t.device != y_t2.device:
        raise ShapeError(f"y_t and y_t2 must be on the same device; got {y_t.device} and {y_t2.device}.")
    out_dtype = torch.promote_types(y_t.dtype, y_t2.dtype)
    ct = _compute_dtype(y_t, y_t2)
    return y_t.to(ct), y_t2.to(ct), out_dtype


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
    y_t, y_t2, out_dtype = _paired(y_t, y_t2)
    return torch.linalg.vector_norm(y_t - y_t2, dim=1).mean().to(out_dtype)


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
    ct = _compute_dtype(a, b)
    return torch.linalg.vector_norm(a.to(ct).mean(0) - b.to(ct).mean(0)).to(out_dtype)
