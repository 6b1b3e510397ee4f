"""Cluster-quality indices of labelled samples: silhouette, Davies–Bouldin, Calinski–Harabasz.

All three follow scikit-learn's definitions (``sklearn.metrics``) to the last digit that matters;
they differ only where scikit-learn returns a number for an undefined case (all points identical),
where these return NaN with a :class:`~repdiag.RepdiagWarning`. Pairwise distances are computed in
blocks of the upper triangle of the distance matrix (it is symmetric), so memory stays
``O(block^2 + n (d + k))`` and the arithmetic is 1/2 to 2/3 of the full ``n x n x d`` product.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._errors import warn_undefined
from .._validation import check_samples
from ._distances import (  # noqa: F401 - re-exported: they lived here
    _auto_block,
    _distance_sums,
    _distance_sums_numpy,
    cluster_distance_sums,
    cluster_distance_sums_many,
    distance_sums_capped,
    distance_sums_exact,
    host_workers,
)
from ._labelled import identical_rows, prepare_groups, undefined_reason  # noqa: F401 - re-exported
from ._precision import checked_rescaled

__all__ = [
    "silhouette_score",
    "silhouette_samples",
    "davies_bouldin_score",
    "calinski_harabasz_score",
    "standardize",
    "cluster_distance_sums",
]

def _nan(x: Tensor, shape: tuple[int, ...] = ()) -> Tensor:
    return torch.full(shape, float("nan"), dtype=x.dtype, device=x.device)


def standardize(x: Tensor) -> Tensor:
    """Per-feature standardisation ``(x - mean) / std`` (population std; constant columns -> 0).

    Parameters
    ----------
    x : Tensor of shape (n_samples, n_features)

    Returns
    -------
    Tensor of shape (n_samples, n_features), same dtype and device. Matches
    ``sklearn.preprocessing.StandardScaler().fit_transform``.

    Examples
    --------
    >>> standardize(torch.tensor([[1.0, 5.0], [3.0, 5.0]]))
    tensor([[-1.,  0.],
            [ 1.,  0.]])
    """
    x = check_samples(x, "x")
    # the result is scale invariant; 1e-30 or 1e20 inputs would under/overflow: a 2^k rescale
    (x,), _, _ = checked_rescaled([(x, "x")])
    return standardized(x)


def standardized(x: Tensor) -> Tensor:
    """:func:`standardize` of finite samples in the safe range, without checks (no sync)."""
    std, mean = torch.std_mean(x, dim=0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return (x - mean) / std


def silhouette_from_sums(sums: Tensor, inverse: Tensor, counts: Tensor) -> Tensor:
    """Per-sample silhouette (float64, shape ``(n,)``) from :func:`cluster_distance_sums` of the
    labels ``inverse`` (in ``0..k-1``) with cluster sizes ``counts``."""
    own = counts[inverse]  # size of each sample's cluster
    cnt = counts.to(torch.float64)
    intra = sums.gather(1, inverse[:, None]).squeeze(1) / (own - 1).clamp(min=1).to(torch.float64)
    mean_other = sums / cnt[None, :]
    mean_other.scatter_(1, inverse[:, None], float("inf"))
    inter = mean_other.min(dim=1).values
    s = (inter - intra) / torch.maximum(intra, inter)
    s = torch.nan_to_num(s, nan=0.0)  # a = b = 0: duplicated points in different clusters
    return torch.where(own > 1, s, torch.zeros_like(s))  # singleton clusters score 0


def _silhouette(x: Tensor, inverse: Tensor, counts: Tensor, k: int, block: int | None) -> Tensor:
    onehot = torch.nn.functional.one_hot(inverse, k)
    return silhouette_from_sums(cluster_distance_sums(x, onehot, block=block), inverse, counts).to(x.dtype)


def silhouette_samples(x: Tensor, labels: Tensor, *, block: int | None = None) -> Tensor:
    """Silhouette coefficient of each sample (Euclidean distance).

    ``s_i = (b_i - a_i) / max(a_i, b_i)`` with ``a_i`` the mean distance from ``x_i`` to the other
    members of its cluster and ``b_i`` the smallest mean distance from ``x_i`` to the members of
    another cluster; ``s_i = 0`` for a sample alone in its cluster (scikit-learn's convention).

    Parameters
    ----------
    x : Tensor of shape (n_samples, n_features)
    labels : Tensor of shape (n_samples,), integer cluster or class labels
    block : int, optional
        Rows per distance block (default: at most 4096, at least 3 blocks for n > 1024); memory
        is ``O(block^2 + n_samples * (n_features + n_clusters))``.

    Returns
    -------
    Tensor of shape (n_samples,), dtype and device of ``x``. All NaN (with a RepdiagWarning) when
    undefined: fewer than 2 or more than ``n - 1`` distinct labels, or all points identical.

    References
    ----------
    Rousseeuw, "Silhouettes: a graphical aid to the interpretation and validation of cluster
    analysis", J. Comput. Appl. Math. 20 (1987). Same as ``sklearn.metrics.silhouette_samples``.

    Examples
    --------
    >>> x = torch.tensor([[0.0], [1.0], [5.0], [6.0]])
    >>> silhouette_samples(x, torch.tensor([0, 0, 1, 1]))
    tensor([0.8182, 0.7778, 0.7778, 0.8182])
    """
    x, inverse, counts, k, why = prepare_groups(x, labels)
    if why:
        warn_undefined("silhouette", why)
        return _nan(x, (x.shape[0],))
    return _silhouette(x, inverse, counts, k, block)


def silhouette_score(x: Tensor, labels: Tensor, *, block: int | None = None) -> Tensor:
    """Mean silhouette coefficient over all samples (see :func:`silhouette_samples`).

    Returns a 0-d tensor in ``x``'s dtype and device, in ``[-1, 1]``; higher means samples are
    closer to their own cluster than to the next one. NaN with a RepdiagWarning when undefined.
    Equals ``sklearn.metrics.silhouette_score(x, labels)``.

    Examples
    --------
    >>> x = torch.tensor([[0.0], [1.0], [5.0], [6.0]])
    >>> silhouette_score(x, torch.tensor([0, 0, 1, 1]))
    tensor(0.7980)
    """
    x, inverse, counts, k, why = prepare_groups(x, labels)
    if why:
        warn_undefined("silhouette", why)
        return _nan(x)
    return _silhouette(x, inverse, counts, k, block).to(torch.float64).mean().to(x.dtype)


def centroids(x: Tensor, inverse: Tensor, counts: Tensor, k: int) -> Tensor:
    """Class means, accumulated in float64: a class of one repeated point then has exactly that
    point as centroid (a float32 mean can be an ulp off, and Davies–Bouldin divides by such
    ulp-sized dispersions and centroid gaps)."""
    sums = torch.zeros((k, x.shape[1]), dtype=torch.float64, device=x.device).index_add_(0, inverse, x.double())
    return (sums / counts[:, None].to(torch.float64)).to(x.dtype)


def davies_bouldin_from(x: Tensor, inverse: Tensor, counts: Tensor, cent: Tensor) -> Tensor:
    """Davies–Bouldin index of ``x`` with labels ``inverse`` (``0..k-1``), cluster sizes ``counts``
    and centroids ``cent`` (k, d), on a defined case (see :func:`davies_bouldin_score`)."""
    k = cent.shape[0]
    dist = (x - cent[inverse]).norm(dim=1)
    intra = torch.zeros(k, dtype=x.dtype, device=x.device).index_add_(0, inverse, dist) / counts.to(x.dtype)
    cdist = torch.cdist(cent[None], cent[None], compute_mode="donot_use_mm_for_euclid_dist").squeeze(0)
    cdist = torch.where(cdist == 0, torch.full_like(cdist, float("inf")), cdist)
    ratio = (intra[:, None] + intra[None, :]) / cdist
    ratio.fill_diagonal_(float("-inf"))
    db = ratio.max(dim=1).values.mean()
    return torch.where((intra.abs() <= 1e-8).all(), torch.zeros_like(db), db)  # each cluster one point


def davies_bouldin_score(x: Tensor, labels: Tensor) -> Tensor:
    """Davies–Bouldin index (lower is better).

    ``DB = (1/k) sum_i max_{j != i} (s_i + s_j) / ||c_i - c_j||`` with ``c_i`` the centroid of
    cluster i and ``s_i`` the mean Euclidean distance of its members to ``c_i``.

    Parameters
    ----------
    x : Tensor of shape (n_samples, n_features)
    labels : Tensor of shape (n_samples,)

    Returns
    -------
    0-d Tensor, dtype and device of ``x``. 0 when every cluster is a single point repeated (as
    scikit-learn). NaN with a RepdiagWarning when undefined: fewer than 2 or more than ``n - 1``
    distinct labels, or all points identical (scikit-learn returns 0 there).

    References
    ----------
    Davies, Bouldin, "A cluster separation measure", IEEE TPAMI 1(2) (1979). Same as
    ``sklearn.metrics.davies_bouldin_score``.

    Examples
    --------
    >>> x = torch.tensor([[0.0], [2.0], [10.0], [12.0]])
    >>> davies_bouldin_score(x, torch.tensor([0, 0, 1, 1]))
    tensor(0.2000)
    """
    x, inverse, counts, k, why = prepare_groups(x, labels)
    if why:
        warn_undefined("Davies-Bouldin index", why)
        return _nan(x)
    return davies_bouldin_from(x, inverse, counts, centroids(x, inverse, counts, k))


CH_ZERO_W = "the within-cluster dispersion is zero"


def calinski_harabasz_from(x: Tensor, inverse: Tensor, counts: Tensor, cent: Tensor) -> Tensor:
    """Calinski–Harabasz index from labels ``inverse``, sizes ``counts`` and centroids ``cent`` on a
    defined case; NaN with a RepdiagWarning when the within-cluster dispersion is 0 (the one host
    sync)."""
    value, zero_w = calinski_harabasz_parts(x, inverse, counts, cent)
    if bool(zero_w):
        warn_undefined("Calinski-Harabasz index", CH_ZERO_W)
    return value


def calinski_harabasz_parts(x: Tensor, inverse: Tensor, counts: Tensor, cent: Tensor) -> tuple[Tensor, Tensor]:
    """The index (NaN where the within-cluster dispersion W is 0) and the 0-d bool ``W == 0``, no
    sync: the caller warns (:data:`CH_ZERO_W`) when the flag turns out True."""
    n, k = x.shape[0], cent.shape[0]
    extra = (counts.to(x.dtype) * ((cent - x.mean(dim=0)) ** 2).sum(dim=1)).sum()
    intra = ((x - cent[inverse]) ** 2).sum()
    zero_w = intra == 0
    value = extra * (n - k) / (intra * (k - 1.0))
    return torch.where(zero_w, torch.full_like(value, float("nan")), value), zero_w


def calinski_harabasz_score(x: Tensor, labels: Tensor) -> Tensor:
    """Calinski–Harabasz index, the variance ratio criterion (higher is better).

    ``CH = [B / (k - 1)] / [W / (n - k)]`` with between-cluster dispersion
    ``B = sum_c n_c ||c_c - mean||^2`` and within-cluster dispersion ``W = sum_i ||x_i - c_{l_i}||^2``.

    Parameters
    ----------
    x : Tensor of shape (n_samples, n_features)
    labels : Tensor of shape (n_samples,)

    Returns
    -------
    0-d Tensor, dtype and device of ``x``. NaN with a RepdiagWarning when undefined: fewer than 2
    or more than ``n - 1`` distinct labels, all points identical, or ``W = 0`` (each cluster a
    single repeated point; scikit-learn returns 1.0 in these last two cases).

    References
    ----------
    Calinski, Harabasz, "A dendrite method for cluster analysis", Communications in Statistics
    3(1) (1974). Same as ``sklearn.metrics.calinski_harabasz_score``.

    Examples
    --------
    >>> x = torch.tensor([[0.0], [2.0], [10.0], [12.0]])
    >>> calinski_harabasz_score(x, torch.tensor([0, 0, 1, 1]))
    tensor(50.)
    """
    x, inverse, counts, k, why = prepare_groups(x, labels)
    if why:
        warn_undefined("Calinski-Harabasz index", why)
        return _nan(x)
    return calinski_harabasz_from(x, inverse, counts, centroids(x, inverse, counts, k))
