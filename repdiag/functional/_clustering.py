"""Cluster-quality indices of labelled samples: silhouette, Davies–Bouldin, Calinski–Harabasz.

All three follow scikit-learn's definitions (``sklearn.metrics``) to the last digit that matters;
they differ only where scikit-learn returns a number for an undefined case (all points identical),
where these return NaN with a :class:`~repdiag.RepdiagWarning`. Pairwise distances are computed in
blocks of the upper triangle of the distance matrix (it is symmetric), so memory stays
``O(block^2 + n (d + k))`` and the arithmetic is 1/2 to 2/3 of the full ``n x n x d`` product.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._errors import warn_undefined
from .._validation import check_finite, check_labels, check_positive_int, check_samples

__all__ = [
    "silhouette_score",
    "silhouette_samples",
    "davies_bouldin_score",
    "calinski_harabasz_score",
    "standardize",
    "cluster_distance_sums",
]

def _prepare(x: Any, labels: Any, name: str) -> tuple[Tensor, Tensor, Tensor, int]:
    """Validated samples, labels mapped to ``0..k-1``, cluster sizes and k."""
    x = check_samples(x, "x")
    check_finite(x, "x")
    lab = check_labels(labels, x.shape[0], device=x.device)
    _, inverse, counts = torch.unique(lab, return_inverse=True, return_counts=True)
    return x, inverse, counts, int(counts.numel())


def _undefined_reason(x: Tensor, k: int) -> str | None:
    n = x.shape[0]
    if k < 2:
        return f"the labels hold {k} distinct class(es); at least 2 are needed"
    if k > n - 1:
        return f"{k} distinct labels for {n} samples; at most n - 1 = {n - 1} clusters are allowed"
    if bool((x == x[:1]).all()):
        return "all points are identical"
    return None


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
    std, mean = torch.std_mean(x, dim=0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return (x - mean) / std


def _auto_block(n: int) -> int:
    """At least 3 row blocks (the upper triangle then costs <= 2/3 of the full product), blocks
    of at most 4096 rows (64 MiB of float32 distances); small inputs in one block."""
    if n <= 1024:
        return max(n, 1)
    return -(-n // max(3, -(-n // 4096)))


def cluster_distance_sums(x: Tensor, onehot: Tensor, *, block: int | None = None) -> Tensor:
    """``S[i, c] = sum_{j in cluster c} ||x_i - x_j||``, shape ``(n, k)``, in float64.

    The distance matrix is symmetric, so only blocks ``(I, J)`` with ``I <= J`` are formed: each
    gives its rows' sums (``D_IJ @ onehot_J``) and, transposed, its columns' (``D_IJ^T @ onehot_I``).
    Squared distances come from one product of augmented rows, ``[x_i, |x_i|^2, 1] .
    [-2 x_j, 1, |x_j|^2]``, so each block costs one matmul plus a clamp and a square root.
    Memory is ``O(block^2 + n (d + k))``. ``x`` is centred first (distances are translation
    invariant, and the expansion loses less to cancellation near the origin).
    """
    n = x.shape[0]
    block = _auto_block(n) if block is None else check_positive_int(block, "block")
    x = x - x.mean(dim=0)
    sq = (x * x).sum(dim=1, keepdim=True)
    one = torch.ones_like(sq)
    left = torch.cat([x, sq, one], dim=1)
    right = torch.cat([-2 * x, one, sq], dim=1)
    oh = onehot.to(x.dtype)
    sums = torch.zeros(onehot.shape, dtype=torch.float64, device=x.device)
    starts = list(range(0, n, block))
    for i in starts:
        for j in starts:
            if j < i:
                continue
            d = left[i:i + block] @ right[j:j + block].T
            d.clamp_(min=0).sqrt_()
            if i == j:
                d.fill_diagonal_(0)
            sums[i:i + block] += (d @ oh[j:j + block]).to(torch.float64)
            if j != i:
                sums[j:j + block] += (d.T @ oh[i:i + block]).to(torch.float64)
    return sums


def _silhouette(x: Tensor, inverse: Tensor, counts: Tensor, k: int, block: int | None) -> Tensor:
    onehot = torch.nn.functional.one_hot(inverse, k)
    sums = cluster_distance_sums(x, onehot, block=block)
    own = counts[inverse]  # size of each sample's cluster
    cnt = counts.to(torch.float64)
    intra = sums.gather(1, inverse[:, None]).squeeze(1) / (own - 1).clamp(min=1).to(torch.float64)
    mean_other = sums / cnt[None, :]
    mean_other.scatter_(1, inverse[:, None], float("inf"))
    inter = mean_other.min(dim=1).values
    s = (inter - intra) / torch.maximum(intra, inter)
    s = torch.nan_to_num(s, nan=0.0)  # a = b = 0: duplicated points in different clusters
    s = torch.where(own > 1, s, torch.zeros_like(s))  # singleton clusters score 0
    return s.to(x.dtype)


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
    x, inverse, counts, k = _prepare(x, labels, "x")
    why = _undefined_reason(x, k)
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
    x, inverse, counts, k = _prepare(x, labels, "x")
    why = _undefined_reason(x, k)
    if why:
        warn_undefined("silhouette", why)
        return _nan(x)
    return _silhouette(x, inverse, counts, k, block).to(torch.float64).mean().to(x.dtype)


def _centroids(x: Tensor, inverse: Tensor, counts: Tensor, k: int) -> Tensor:
    sums = torch.zeros((k, x.shape[1]), dtype=x.dtype, device=x.device).index_add_(0, inverse, x)
    return sums / counts[:, None].to(x.dtype)


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
    x, inverse, counts, k = _prepare(x, labels, "x")
    why = _undefined_reason(x, k)
    if why:
        warn_undefined("Davies-Bouldin index", why)
        return _nan(x)
    cent = _centroids(x, inverse, counts, k)
    dist = (x - cent[inverse]).norm(dim=1)
    intra = torch.zeros(k, dtype=x.dtype, device=x.device).index_add_(0, inverse, dist) / counts.to(x.dtype)
    cdist = torch.cdist(cent[None], cent[None], compute_mode="donot_use_mm_for_euclid_dist").squeeze(0)
    if bool((intra.abs() <= 1e-8).all()):
        return torch.zeros((), dtype=x.dtype, device=x.device)
    cdist = torch.where(cdist == 0, torch.full_like(cdist, float("inf")), cdist)
    ratio = (intra[:, None] + intra[None, :]) / cdist
    ratio.fill_diagonal_(float("-inf"))
    return ratio.max(dim=1).values.mean()


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
    x, inverse, counts, k = _prepare(x, labels, "x")
    why = _undefined_reason(x, k)
    n = x.shape[0]
    if why:
        warn_undefined("Calinski-Harabasz index", why)
        return _nan(x)
    cent = _centroids(x, inverse, counts, k)
    mean = x.mean(dim=0)
    extra = (counts.to(x.dtype) * ((cent - mean) ** 2).sum(dim=1)).sum()
    intra = ((x - cent[inverse]) ** 2).sum()
    if float(intra) == 0.0:
        warn_undefined("Calinski-Harabasz index", "the within-cluster dispersion is zero")
        return _nan(x)
    return extra * (n - k) / (intra * (k - 1.0))
