"""k-means (greedy k-means++ seeding, Lloyd iterations); agreement of clusters with labels lives in
``_agreement.py`` (re-exported here).

Everything runs on the input's device with a private generator (the global RNG is untouched).
The algorithm follows ``sklearn.cluster.KMeans(algorithm="lloyd")`` step for step, so from the same
initial centres both give the same labels and inertia.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from .._errors import ConfigError, ShapeError
from .._validation import check_nonneg_float, check_positive_int, check_samples
from ._agreement import (  # noqa: F401 - re-exported: they lived here
    nearest_centroid_accuracy,
    normalized_mutual_info,
    purity,
    stratified_split,
)
from ._device import fetch, host_path
from ._precision import checked_rescaled

__all__ = [
    "KMeansResult",
    "kmeans",
    "kmeans_stack",
    "kmeans_plusplus",
    "normalized_mutual_info",
    "purity",
    "nearest_centroid_accuracy",
    "stratified_split",
]

_CHECK_EVERY = 8  # on CUDA, Lloyd iterations between host checks of convergence


class KMeansResult(NamedTuple):
    """``labels`` (n,) int64, ``centers`` (k, d) and ``inertia`` (0-d), dtype/device of the input."""

    labels: Tensor
    centers: Tensor
    inertia: Tensor


def _sq_dist(x: Tensor, x_sq: Tensor, c: Tensor) -> Tensor:
    """Squared distances (B, n, m) from the rows of x (B, n, d) to those of c (B, m, d), clamped at 0."""
    d = torch.baddbmm((c * c).sum(dim=2)[:, None, :], x, c.transpose(1, 2), beta=1, alpha=-2)
    return d.add_(x_sq[:, :, None]).clamp_(min=0)


def _assign(x: Tensor, x_sq: Tensor, centers: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest centre (L, r, n) and squared distance to it (L, r, n) of x (L, n, d) for r runs'
    centres (L, r, k, d): one product per set for all its runs, so x is read once."""
    nl, r, k, d = centers.shape
    flat = centers.reshape(nl, r * k, d)
    dist = torch.baddbmm((flat * flat).sum(dim=2)[:, None, :], x, flat.transpose(1, 2), beta=1, alpha=-2)
    val, idx = dist.view(nl, -1, r, k).min(dim=3)
    return idx.transpose(1, 2), val.add_(x_sq[:, :, None]).clamp_(min=0).transpose(1, 2)


def _seed(x: Tensor, x_sq: Tensor, k: int, gens: Sequence[torch.Generator], per: int) -> Tensor:
    """Greedy k-means++ centres (B, k, d) for B = len(gens) * per runs on x (B, n, d); run r draws
    from ``gens[r // per]``, so a layer's seeding does not depend on what it is batched with."""
    b, n, _ = x.shape
    trials = 2 + int(math.log(k))
    ar = torch.arange(b, device=x.device)
    first = torch.cat([torch.randint(n, (per,), generator=g, device=g.device) for g in gens]).to(x.device)
    centers = torch.empty((b, k, x.shape[2]), dtype=x.dtype, device=x.device)
    centers[:, 0] = x[ar, first]
    closest = _sq_dist(x, x_sq, centers[:, :1]).squeeze(2).to(torch.float64)
    pot = closest.sum(dim=1)
    for c in range(1, k):
        u = torch.cat([torch.rand((per, trials), generator=g, device=g.device, dtype=torch.float64)
                       for g in gens]).to(x.device)
        cand = torch.searchsorted(torch.cumsum(closest, 1), u * pot[:, None]).clamp_(max=n - 1)
        cx = x[ar[:, None], cand]
        d = torch.minimum(closest[:, None, :], _sq_dist(x, x_sq, cx).transpose(1, 2).to(torch.float64))
        pots = d.sum(dim=2)
        best = pots.argmin(dim=1)
        centers[:, c] = cx[ar, best]
        closest, pot = d[ar, best], pots[ar, best]
    return centers


def kmeans_plusplus(x: Tensor, k: int, *, generator: torch.Generator) -> Tensor:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; scikit-learn's variant).

    The first centre is a uniform random sample; each next one is the best, by resulting
    potential, of ``2 + floor(ln k)`` candidates drawn with probability proportional to the squared
    distance to the nearest chosen centre. Returns ``(k, d)`` centres.
    """
    return _seed(x[None], (x * x).sum(dim=1)[None], k, [generator], 1)[0]


def _relocate(x: Tensor, labels: Tensor, dmin: Tensor, sums: Tensor, counts: Tensor,
              empty: Tensor) -> tuple[Tensor, Tensor]:
    """Empty clusters take the points farthest from their centres (the i-th empty cluster the
    i-th farthest point), leaving the point's old cluster when it has other members. x (L, n, d);
    labels, dmin (L, r, n); sums (L, r, k, d); counts, empty (L, r, k)."""
    k, d = counts.shape[2], x.shape[2]
    far = dmin.topk(k, dim=2).indices
    pt = far.gather(2, (empty.cumsum(2) - 1).clamp(min=0))
    old = labels.gather(2, pt)
    xp = x[torch.arange(x.shape[0], device=x.device)[:, None, None], pt]
    w = (empty & (counts.gather(2, old) > 1)).to(x.dtype)
    sums = sums.scatter_add(2, old[..., None].expand(-1, -1, -1, d), -xp * w[..., None])
    counts = counts.scatter_add(2, old, -w)
    return torch.where(empty[..., None], xp, sums), torch.where(empty, torch.ones_like(counts), counts)


def _lloyd(x: Tensor, x_sq: Tensor, centers: Tensor, max_iter: int, tol: Tensor) -> Tensor:
    """Lloyd iterations of r runs on each of L sets (x (L, n, d), centres (L, r, k, d), tol (L,));
    returns the final centres (L, r, k, d). Each run stops, as scikit-learn's, when its labels
    repeat or its centres' squared shift is <= tol; its centres stay fixed from then on. The runs
    of a set share its reads of x (one product assigns all of them, one sums their members), and a
    set leaves the batch when all its runs have stopped (on CUDA at the host checks, every 8
    iterations)."""
    nl, r, k, d = centers.shape
    n = x.shape[1]
    cpu = host_path(x)
    out = centers.clone()
    act = torch.arange(nl, device=x.device)
    xa, xsa, ca, tola = x, x_sq, centers, tol
    done = torch.zeros((nl, r), dtype=torch.bool, device=x.device)
    offset = (torch.arange(r, device=x.device) * k)[None, :, None]
    labels_old: Tensor | None = None
    for it in range(max_iter):
        labels, dmin = _assign(xa, xsa, ca)
        # a one-hot matmul sums the members of each cluster ~4x faster than index_add_ on CPU
        onehot = torch.zeros((xa.shape[0], r * k, n), dtype=x.dtype, device=x.device)
        onehot.scatter_(1, labels + offset, 1)
        counts = onehot.sum(dim=2).view(-1, r, k)
        sums = torch.bmm(onehot, xa).view(-1, r, k, d)
        empty = counts == 0
        if not cpu or bool(empty.any()):
            sums, counts = _relocate(xa, labels, dmin, sums, counts, empty)
        new = torch.where((counts > 0)[..., None], sums / counts.clamp(min=1)[..., None], ca)
        stop = ((new - ca) ** 2).sum(dim=(2, 3)) <= tola[:, None]
        if labels_old is not None:
            stop |= (labels == labels_old).all(dim=2)
        ca = torch.where(done[:, :, None, None], ca, new)
        done = done | stop
        labels_old = labels
        if cpu or (it + 1) % _CHECK_EVERY == 0:
            # the convergence check: how many sets have all their runs finished (on an accelerator
            # the loop's one host sync, every 8 iterations); they leave the batch by index, built on
            # the device
            fin = done.all(dim=1)
            n_fin = int(fetch(fin.sum())[0][0])
            if n_fin == fin.shape[0]:
                out[act] = ca
                break
            if n_fin:
                gone = torch.nonzero_static(fin, size=n_fin).flatten()
                keep = torch.nonzero_static(~fin, size=fin.shape[0] - n_fin).flatten()
                out[act[gone]] = ca[gone]
                act, xa, xsa, ca, tola = act[keep], xa[keep], xsa[keep], ca[keep], tola[keep]
                labels_old, done = labels[keep], done[keep]
    else:
        out[act] = ca
    return out


def kmeans_stack(x: Tensor, k: int, *, n_init: int = 1, seeds: Sequence[int] = (0,), init: Tensor | None = None,
                 max_iter: int = 300, tol: float = 1e-4) -> KMeansResult:
    """:func:`kmeans` of L same-shaped, finite sample sets at once: x (L, n, d), ``k <= n``.

    Set i is seeded like ``kmeans(x[i], k, n_init=n_init, seed=seeds[i])`` (same draws, products
    batched), or starts from ``init[i]``: ``init`` of shape (L, k, d), or (L, r, k, d) for r
    runs per set. Each set keeps its lowest-inertia run; results carry the leading L."""
    nl, n, d = x.shape
    # Lloyd runs on the centred samples, as scikit-learn's: the distance expansion
    # |x|^2 - 2 x.c + |c|^2 cancels catastrophically when the spread is tiny beside the offset (deep
    # layers of a plain network: variance 1e-10 at activations of 1e-2), and then the labels flicker
    # and no run converges. Distances, labels and inertia do not depend on the shift.
    mean = x.mean(dim=1, keepdim=True)
    x = x - mean
    var = (x * x).sum(dim=(1, 2)) / (n * d)  # mean per-feature variance
    x_sq = (x * x).sum(dim=2)
    if init is not None:
        init = init[:, None] if init.ndim == 3 else init
        runs = init.shape[1]
        centers = init - mean[:, None]
    else:
        runs = n_init
        xr, xr_sq = (x, x_sq) if runs == 1 else (x.repeat_interleave(runs, dim=0), x_sq.repeat_interleave(runs, dim=0))
        gens = [torch.Generator(device=x.device).manual_seed(int(s)) for s in seeds]
        centers = _seed(xr, xr_sq, k, gens, runs).view(nl, runs, k, d)
        del xr, xr_sq
    out = _lloyd(x, x_sq, centers, max_iter, tol * var)
    labels = _assign(x, x_sq, out)[0]
    ar = torch.arange(nl, device=x.device)
    inertia = torch.stack([_inertia(x, out[:, j], labels[:, j]) for j in range(runs)], dim=1)
    best = inertia.argmin(dim=1)
    return KMeansResult(labels[ar, best], out[ar, best] + mean, inertia[ar, best])


def _inertia(x: Tensor, centers: Tensor, labels: Tensor) -> Tensor:
    """Summed squared distances (L,) of x (L, n, d) to their centres (L, k, d) by labels (L, n),
    from the residuals (exact; the expansion would cancel)."""
    res = x - centers[torch.arange(x.shape[0], device=x.device)[:, None], labels]
    return res.mul_(res).sum(dim=(1, 2))


def kmeans(
    x: Tensor,
    k: int,
    *,
    n_init: int = 1,
    seed: int = 0,
    init: Tensor | None = None,
    max_iter: int = 300,
    tol: float = 1e-4,
) -> KMeansResult:
    """k-means clustering: greedy k-means++ seeding, then Lloyd iterations.

    Minimises the inertia ``sum_i min_c ||x_i - mu_c||^2``. Each run stops when the labels no
    longer change, or when the squared shift of all centres is at most ``tol`` times the mean
    per-feature variance of ``x`` (scikit-learn's criterion), or after ``max_iter`` iterations; the
    best of ``n_init`` runs (lowest inertia) is returned. An empty cluster takes the point farthest
    from its centre. The ``n_init`` runs go together through batched products; on CUDA the host
    checks convergence every 8 iterations (a finished run's centres stay fixed meanwhile).

    Parameters
    ----------
    x : Tensor of shape (n_samples, n_features)
    k : int
        Number of clusters, ``1 <= k <= n_samples``.
    n_init : int
        Independent k-means++ seedings (ignored when ``init`` is given).
    seed : int
        Seed of a private generator on ``x``'s device.
    init : Tensor of shape (k, n_features), optional
        Initial centres (then a single run).
    max_iter : int
    tol : float

    Returns
    -------
    KMeansResult
        ``(labels, centers, inertia)``: labels ``(n,)`` int64, centres ``(k, d)`` and a 0-d
        inertia, on ``x``'s device in ``x``'s dtype.

    References
    ----------
    Lloyd, "Least squares quantization in PCM" (1982); Arthur, Vassilvitskii, "k-means++: the
    advantages of careful seeding", SODA 2007. Matches ``sklearn.cluster.KMeans``.

    Examples
    --------
    >>> x = torch.tensor([[0.0], [0.5], [10.0], [10.5]])
    >>> labels, centers, inertia = kmeans(x, 2, init=torch.tensor([[0.0], [10.0]]))
    >>> labels, centers.flatten(), inertia
    (tensor([0, 0, 1, 1]), tensor([ 0.2500, 10.2500]), tensor(0.2500))
    """
    x = check_samples(x, "x")
    k = check_positive_int(k, "k")
    n_init = check_positive_int(n_init, "n_init")
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_nonneg_float(tol, "tol")
    n = x.shape[0]
    if k > n:
        raise ConfigError(f"k must be at most the number of samples ({n}); got k={k}. Use fewer clusters.")
    if init is not None:
        init = check_samples(init, "init").to(device=x.device, dtype=x.dtype)
        if init.shape != (k, x.shape[1]):
            raise ShapeError(f"init must have shape (k, n_features) = {(k, x.shape[1])}; got {tuple(init.shape)}.")
    # finite inputs (one host sync with the scale); half -> float32, and magnitudes whose squares
    # float32 cannot hold rescaled by a power of two (exact; the labels are those of x, centres
    # and inertia are scaled back)
    (x, *rest), s, _ = checked_rescaled([(x, "x")] + ([] if init is None else [(init, "init")]))
    res = kmeans_stack(x[None], k, n_init=n_init, seeds=[seed], init=rest[0][None] if rest else None,
                       max_iter=max_iter, tol=tol)
    if s == 1.0:
        return KMeansResult(res.labels[0], res.centers[0], res.inertia[0])
    inertia = (res.inertia[0].to(torch.float64) * (s * s)).to(x.dtype)  # inf where x.dtype cannot hold it
    return KMeansResult(res.labels[0], res.centers[0] * s, inertia)
