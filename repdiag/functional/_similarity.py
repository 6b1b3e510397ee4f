"""Representation similarity (linear CKA, debiased CKA) and dimension (effective rank,
participation ratio)."""

from __future__ import annotations

import torch
from torch import Tensor

from .._errors import ShapeError, warn_undefined
from .._validation import check_finite, check_samples
from ._precision import metric_input

__all__ = ["linear_cka", "effective_rank", "participation_ratio"]


def _hsic_terms(a: Tensor, b: Tensor) -> Tensor:
    """``||a^T b||_F^2 = tr(K L)`` for column-centred a (n, p), b (n, q), in the cheaper space."""
    n, p, q = a.shape[0], a.shape[1], b.shape[1]
    if n * n * (p + q) < n * p * q:  # Gram space: K = a a^T, L = b b^T
        return ((a @ a.T) * (b @ b.T)).sum()
    return (a.T @ b).pow(2).sum()


def _debias(xty: Tensor, rx: Tensor, ry: Tensor, n: int) -> Tensor:
    """Unbiased HSIC numerator (Song et al. 2012) from ``tr(KL)``, row norms ``rx``, ``ry``."""
    return xty - n / (n - 2.0) * (rx @ ry) + rx.sum() * ry.sum() / ((n - 1.0) * (n - 2.0))


def linear_cka(x: Tensor, y: Tensor, *, debiased: bool = False) -> Tensor:
    """Linear centred kernel alignment between two representations of the same n inputs.

    With column-centred ``X`` (n, d1) and ``Y`` (n, d2),
    ``CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)``, i.e. ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``
    for linear kernels ``K = X X^T``, ``L = Y Y^T``. ``debiased=True`` uses the unbiased HSIC
    estimator (diagonals of K and L removed), which does not drift upward with d / n.

    Parameters
    ----------
    x : Tensor of shape (n_samples, d1)
    y : Tensor of shape (n_samples, d2), same rows (inputs) as ``x``
    debiased : bool

    Returns
    -------
    0-d Tensor in ``x``'s dtype and device; in ``[0, 1]`` (the debiased value may be slightly
    negative). Invariant to orthogonal transforms and isotropic scaling of either input. NaN with a
    RepdiagWarning when either input has zero variance, or (debiased) fewer than 4 samples.

    References
    ----------
    Kornblith, Norouzi, Lee, Hinton, "Similarity of neural network representations revisited",
    ICML 2019; Nguyen, Raghu, Kornblith, "Do wide and deep networks learn the same things?",
    ICLR 2021 (debiased estimator).

    Examples
    --------
    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    >>> linear_cka(x, 3 * x), linear_cka(x, x[:, :1])
    (tensor(1.), tensor(0.7071))
    """
    x = check_samples(x, "x")
    y = check_samples(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ShapeError(f"x and y must hold the same samples (rows); got {x.shape[0]} and {y.shape[0]} rows. "
                         "Feed both layers (or runs) the same inputs.")
    check_finite(x, "x")
    check_finite(y, "y")
    x = metric_input(x)  # CKA is invariant to isotropic scaling of either input: rescale each alone
    y = metric_input(y).to(device=x.device, dtype=x.dtype)
    n = x.shape[0]
    nan = torch.full((), float("nan"), dtype=x.dtype, device=x.device)
    if debiased and n < 4:
        warn_undefined("debiased CKA", f"it needs at least 4 samples; got {n}")
        return nan
    xc, yc = x - x.mean(dim=0), y - y.mean(dim=0)
    if not bool(xc.any()) or not bool(yc.any()):
        warn_undefined("CKA", "a representation has zero variance (all samples identical)")
        return nan
    xy, xx, yy = _hsic_terms(xc, yc), _hsic_terms(xc, xc), _hsic_terms(yc, yc)
    if debiased:
        rx, ry = (xc * xc).sum(dim=1), (yc * yc).sum(dim=1)
        xy, xx, yy = _debias(xy, rx, ry, n), _debias(xx, rx, rx, n), _debias(yy, ry, ry, n)
        if float(xx) <= 0 or float(yy) <= 0:
            warn_undefined("debiased CKA", "an unbiased self-similarity is not positive")
            return nan
    return xy / (xx.sqrt() * yy.sqrt())


def _spectrum(x: Tensor, what: str) -> tuple[Tensor | None, Tensor]:
    """Singular values of the centred samples (None, with a warning, when all are 0), and the
    validated samples in their compute dtype."""
    x = check_samples(x, "x", min_samples=2)
    check_finite(x, "x")
    x = metric_input(x)  # both dimensions are scale invariant; s**4 of 1e10 inputs overflows float32
    xc = x - x.mean(dim=0)
    s = torch.linalg.svdvals(xc)
    if float(s.max()) <= 0:
        warn_undefined(what, "the samples have zero variance")
        return None, x
    return s, x


def effective_rank(x: Tensor) -> Tensor:
    """Effective rank of the centred samples: ``exp(H(p))`` with ``p_i = sigma_i / sum_j sigma_j``.

    ``sigma`` are the singular values of ``x - mean`` and ``H`` the Shannon entropy (nats). Lies in
    ``[1, min(n - 1, d)]``; equals r for r equal nonzero singular values.

    Parameters
    ----------
    x : Tensor of shape (n_samples, n_features), n_samples >= 2

    Returns
    -------
    0-d Tensor in ``x``'s dtype and device; NaN with a RepdiagWarning when every feature is
    constant.

    References
    ----------
    Roy, Vetterli, "The effective rank: a measure of effective dimensionality", EUSIPCO 2007.

    Examples
    --------
    >>> effective_rank(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]))
    tensor(2.)
    """
    s, x = _spectrum(x, "effective rank")
    if s is None:
        return torch.full((), float("nan"), dtype=x.dtype, device=x.device)
    p = s / s.sum()
    p = p[p > 0]
    return torch.exp(-(p * p.log()).sum()).to(s.dtype)


def participation_ratio(x: Tensor) -> Tensor:
    """Participation ratio of the covariance spectrum: ``(sum_i l_i)^2 / sum_i l_i^2``.

    ``l`` are the eigenvalues of the sample covariance of ``x`` (squared singular values of the
    centred samples; the normalisation cancels). Lies in ``[1, min(n - 1, d)]``.

    Parameters
    ----------
    x : Tensor of shape (n_samples, n_features), n_samples >= 2

    Returns
    -------
    0-d Tensor in ``x``'s dtype and device; NaN with a RepdiagWarning when every feature is
    constant.

    References
    ----------
    Gao, Trautmann, Yu, Santhanam, Ryu, Shenoy, Ganguli, "A theory of multineuronal dimensionality,
    dynamics and measurement", bioRxiv 214262 (2017).

    Examples
    --------
    >>> participation_ratio(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]))
    tensor(2.)
    """
    s, x = _spectrum(x, "participation ratio")
    if s is None:
        return torch.full((), float("nan"), dtype=x.dtype, device=x.device)
    lam = s.to(torch.float64) ** 2
    return (lam.sum() ** 2 / (lam * lam).sum()).to(s.dtype)
