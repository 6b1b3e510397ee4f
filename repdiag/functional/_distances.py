"""Per-class sums of pairwise distances (silhouette's one pass over the distance blocks).

The distance matrix is symmetric, so only blocks ``(I, J)`` with ``I <= J`` are formed, each from
one matmul of augmented rows; entries where that expansion cancels are recomputed from the rows'
difference. On the host path the blocks go through numpy's BLAS in a thread per core; on an
accelerator through PyTorch with a fixed budget of exact recomputations per block, read back in
one host sync (docs/metrics.md).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._validation import check_positive_int
from ._device import available_cores, fetch, host_path

__all__ = ["cluster_distance_sums", "cluster_distance_sums_many", "distance_sums_capped", "distance_sums_exact",
           "host_workers"]


def _auto_block(n: int, most: int = 4096) -> int:
    """Equal row blocks of at most ``most`` rows, at least 3 of them (the upper triangle then costs
    <= 2/3 of the full product); small inputs in one block. 4096 rows (64 MiB of float32
    distances) on an accelerator; 1024 on the CPU (:func:`_distance_sums_numpy`), where a 4 MiB
    block stays in cache for the passes after its matmul and more blocks bring the triangle's
    share of the product nearer 1/2 (n=10,000, d=512: 1.8 s against 2.1 s with 3,334-row blocks)."""
    if n <= 1024:
        return max(n, 1)
    return -(-n // max(3, -(-n // most)))


# A computed squared distance at most this fraction of |x_i|^2 + |x_j|^2 (the size of the terms
# that cancel) is recomputed from the difference of the rows: below it float32 cancellation can
# cost a distance more than ~1e-2 of its value, and an exact duplicate would get
# sqrt(eps |x|^2) > 0. Above it an entry is off by at most ~eps * 128 * sqrt(|x_i|^2 + |x_j|^2).
# Trained ReLU layers hold ~0.03% such pairs (mostly the diagonal), against 0.6% at 2^-12.
_NEAR = 2.0 ** -16


def _exact_near_zero(d2: Tensor, xi: Tensor, xj: Tensor, sqi: Tensor, sqj: Tensor, cap: int | None) -> Tensor:
    """Recompute, in place, the entries of the squared-distance block ``d2`` (rows ``xi``, columns
    ``xj`` with squared norms ``sqi``, ``sqj``) that are at most ``_NEAR (sqi + sqj)``, directly as
    ``|x_i - x_j|^2``. With ``cap`` (CUDA: no host sync) at most ``cap`` candidates are taken; the
    number of candidates beyond ``cap`` is returned (a 0-d tensor; 0 on CPU)."""
    mask = d2 <= _NEAR * (sqi[:, None] + sqj.max())  # a superset, in one pass over the block
    if cap is None:
        idx = mask.nonzero()
        r, c = idx[:, 0], idx[:, 1]
        hit = d2[r, c] <= _NEAR * (sqi[r] + sqj[c])
        r, c = r[hit], c[hit]
        d2[r, c] = ((xi[r] - xj[c]) ** 2).sum(dim=1).to(d2.dtype)
        return torch.zeros((), dtype=torch.int64, device=d2.device)
    found = mask.sum()
    idx = torch.nonzero_static(mask, size=cap, fill_value=0)
    r, c = idx[:, 0], idx[:, 1]
    hit = (d2[r, c] <= _NEAR * (sqi[r] + sqj[c])) & (torch.arange(cap, device=d2.device) < found)
    exact = ((xi[r] - xj[c]) ** 2).sum(dim=1).to(d2.dtype)
    d2.index_put_((r, c), torch.where(hit, exact - d2[r, c], torch.zeros_like(exact)), accumulate=True)
    return (found - cap).clamp(min=0)


def cluster_distance_sums(x: Tensor, onehot: Tensor, *, block: int | None = None) -> Tensor:
    """``S[i, c] = sum_{j in cluster c} ||x_i - x_j||``, shape ``(n, k)``, in float64.

    The distance matrix is symmetric, so only blocks ``(I, J)`` with ``I <= J`` are formed: each
    gives its rows' sums (``D_IJ @ onehot_J``) and, transposed, its columns' (``D_IJ^T @ onehot_I``).
    Squared distances come from one product of augmented rows, ``[x_i, |x_i|^2, 1] .
    [-2 x_j, 1, |x_j|^2]``, so each block costs one matmul plus a clamp and a square root; the few
    entries where that expansion cancels (squared distance at most 2^-16 of ``|x_i|^2 + |x_j|^2``:
    duplicates and near-duplicates) are recomputed from ``x_i - x_j``, so identical rows are at
    distance exactly 0. Memory is ``O(block^2 + n (d + k))``. ``x`` is centred first (distances are
    translation invariant, and the expansion loses less to cancellation near the origin).
    """
    sums, over = distance_sums_capped(x, onehot, block=block)
    if over is not None and bool(over > 0):  # more near-duplicates than the fixed budget (one sync)
        sums = distance_sums_exact(x, onehot, block=block)
    return sums


def distance_sums_capped(x: Tensor, onehot: Tensor, *, block: int | None = None) -> tuple[Tensor, Tensor | None]:
    """:func:`cluster_distance_sums` without its host sync: the sums and, on an accelerator, the
    number of near-duplicate pairs beyond the fixed budget (a 0-d tensor; where it is > 0 the sums
    must be recomputed by :func:`distance_sums_exact`); None on the host path, which is exact."""
    if host_path(x) and x.dtype in (torch.float32, torch.float64):
        return _distance_sums_numpy(x, onehot, block, workers=None), None
    return _distance_sums(x, onehot, block, cap_per_block=4 * 4096)


def distance_sums_exact(x: Tensor, onehot: Tensor, *, block: int | None = None) -> Tensor:
    """The accelerator path of :func:`cluster_distance_sums` with no budget (syncs per block)."""
    return _distance_sums(x, onehot, block, cap_per_block=None)[0]


def host_workers(n_tasks: int) -> int:
    """Threads for ``n_tasks`` independent CPU kernels: at most one per core this process may use
    and at most PyTorch's intra-op thread count (``torch.set_num_threads`` caps both)."""
    return max(1, min(n_tasks, available_cores(), torch.get_num_threads()))


def cluster_distance_sums_many(items: list[tuple[Tensor, Tensor]]) -> list[Tensor]:
    """:func:`cluster_distance_sums` of several ``(x, onehot)`` pairs (the layers of a table).

    On the host path the block pairs of all inputs are shared among a thread per core, one BLAS
    thread each (:func:`_host_distance_sums`): numpy releases the GIL in its products and ufuncs,
    and its passes over each block (row minimum, square root) are single-threaded (20 layers of
    4096 x 64 on 2 cores: 0.63 s against 1.15 s a layer at a time). Results are those of the serial calls up to the
    rounding of float32 products (a BLAS on one thread may split a product differently). On an
    accelerator the near-duplicate budgets of all pairs are read in one host sync; the pairs over
    budget are recomputed exactly."""
    host = [i for i, (x, _) in enumerate(items) if host_path(x) and x.dtype in (torch.float32, torch.float64)]
    out: list[Tensor | None] = [None] * len(items)
    for i, res in zip(host, _host_distance_sums([items[i] for i in host], None, None) if host else []):
        out[i] = res
    rest = [i for i in range(len(items)) if out[i] is None]
    capped = [_distance_sums(*items[i], None, cap_per_block=4 * 4096) for i in rest]
    if rest:
        for i, (sums, _), over in zip(rest, capped, fetch(torch.stack([o.reshape(()) for _, o in capped]))[0]):
            out[i] = distance_sums_exact(*items[i]) if over > 0 else sums
    return [r for r in out if r is not None]


def _distance_sums(x: Tensor, onehot: Tensor, block: int | None, cap_per_block: int | None) -> tuple[Tensor, Tensor]:
    n = x.shape[0]
    block = _auto_block(n) if block is None else check_positive_int(block, "block")
    x = x - x.mean(dim=0)
    sq = (x * x).sum(dim=1, keepdim=True)
    one = torch.ones_like(sq)
    left = torch.cat([x, sq, one], dim=1)
    right = torch.cat([-2 * x, one, sq], dim=1)
    oh = onehot.to(x.dtype)
    sums = torch.zeros(onehot.shape, dtype=torch.float64, device=x.device)
    over = torch.zeros((), dtype=torch.int64, device=x.device)
    starts = list(range(0, n, block))
    for i in starts:
        for j in starts:
            if j < i:
                continue
            d = left[i:i + block] @ right[j:j + block].T
            over += _exact_near_zero(d, x[i:i + block], x[j:j + block], sq[i:i + block, 0], sq[j:j + block, 0],
                                     cap_per_block)
            d.clamp_(min=0).sqrt_()
            if i == j:
                d.fill_diagonal_(0)
            sums[i:i + block] += (d @ oh[j:j + block]).to(torch.float64)
            if j != i:
                sums[j:j + block] += (d.T @ oh[i:i + block]).to(torch.float64)
    return sums, over


def _distance_sums_numpy(x: Tensor, onehot: Tensor, block: int | None, workers: int | None = 1) -> Tensor:
    """:func:`_distance_sums` on CPU, through numpy and its BLAS (see :func:`_host_distance_sums`)."""
    return _host_distance_sums([(x, onehot)], block, workers)[0]


def _host_distance_sums(items: list[tuple[Tensor, Tensor]], block: int | None, workers: int | None) -> list[Tensor]:
    """:func:`_distance_sums` of each ``(x, onehot)`` on CPU, through numpy and its BLAS (OpenBLAS
    in numpy's wheels).

    PyTorch's CPU wheels call MKL, whose float32 GEMM does not use AVX-512 on AMD processors:
    2.5x below OpenBLAS per thread there (docs/benchmarks.md). Every step of the block loop stays
    in numpy, so OpenBLAS's worker threads do not take turns with PyTorch's between steps. With
    ``workers > 1`` (None: :func:`host_workers`) the block pairs of all inputs are shared among
    that many threads, one BLAS thread each, each adding into sums of its own: numpy's passes over
    a block are single-threaded, and OpenBLAS's own threads gain little on these shapes and lose
    much when another process takes a core (n=10,000, d=512 on 2 cores: 0.83 s against 2.1 s with
    one thread and two BLAS threads). Every input's pairs are dealt out to all threads, so a
    table's layers keep every core busy to the end (5 layers on 2 cores would otherwise leave one
    idle for the last)."""
    import numpy as np

    jobs = []
    for x, onehot in items:
        n = x.shape[0]
        b = _auto_block(n, 1024) if block is None else check_positive_int(block, "block")
        xc = x.numpy()  # numpy only from here: this may run in a worker thread (no OpenMP team of its own)
        xc = xc - xc.mean(axis=0, dtype=np.float64).astype(xc.dtype)
        sq = np.einsum("ij,ij->i", xc, xc)[:, None]
        one = np.ones_like(sq)
        left = np.concatenate([xc, sq, one], axis=1)
        right = np.concatenate([-2 * xc, one, sq], axis=1)
        oh = onehot.numpy().astype(xc.dtype)
        pairs = [(i, j) for i in range(0, n, b) for j in range(i, n, b)]
        jobs.append((xc, sq[:, 0], left, right, oh, b, pairs, onehot.shape))

    def run(job: int, mine: list[tuple[int, int]]) -> np.ndarray:
        xc, sq, left, right, oh, block, _, shape = jobs[job]
        sums = np.zeros(shape, dtype=np.float64)
        for i, j in mine:
            d = left[i:i + block] @ right[j:j + block].T
            if i == j:
                np.fill_diagonal(d, np.inf)  # known to be 0; kept out of the candidates
            # Rows holding a candidate first (one row minimum), then the candidates within them:
            # a nonzero over the whole block costs half its matmul.
            thr = _NEAR * (sq[i:i + block] + sq[j:j + block].max())
            rows = np.flatnonzero(d.min(axis=1) <= thr)
            if rows.size:
                r, c = np.nonzero(d[rows] <= thr[rows, None])
                r = rows[r]
                hit = d[r, c] <= _NEAR * (sq[i + r] + sq[j + c])
                r, c = r[hit], c[hit]
                d[r, c] = ((xc[i + r] - xc[j + c]) ** 2).sum(axis=1)
            # No entry is negative now: every one at most _NEAR (sq_i + sq_j), negatives included,
            # was recomputed as a sum of squares.
            np.sqrt(d, out=d)
            if i == j:
                np.fill_diagonal(d, 0)
            sums[i:i + block] += d @ oh[j:j + block]
            if j != i:
                sums[j:j + block] += d.T @ oh[i:i + block]
        return sums

    total = sum(len(j[6]) for j in jobs)
    workers = host_workers(total) if workers is None else min(workers, total)
    if workers < 2:
        return [torch.from_numpy(run(k, job[6])) for k, job in enumerate(jobs)]
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    tasks = [(k, job[6][w::workers]) for k, job in enumerate(jobs) for w in range(workers) if job[6][w::workers]]
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        parts = list(pool.map(lambda t: run(*t), tasks))
    out = [np.zeros(job[7], dtype=np.float64) for job in jobs]
    for (k, _), part in zip(tasks, parts):
        out[k] += part
    return [torch.from_numpy(o) for o in out]
