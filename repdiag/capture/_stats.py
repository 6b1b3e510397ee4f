"""Streaming statistics accumulated inside the hook on the full (un-reduced) activation tensor.

Everything here runs on the activation's device with no host synchronisation: counts that the
host knows from shapes are Python ints, everything data-dependent stays a tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from . import _native

__all__ = ["StreamingStats", "HIST_BINS", "scratch_size"]

HIST_BINS = 1001
"""Bins of the per-sample zero-fraction histogram: a sample with ``z`` zeros among its ``e``
entries goes to bin ``round(1000 * z / e)``, halves rounded up, computed exactly in integers."""


def _acc_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


CPU_CHUNK = 1 << 19
"""Entries per chunk of the conv-map reductions on CPU: 2 MiB of float32 plus as much zero mask
stay in cache across the five reductions, instead of streaming the tensor five times from memory.
Smaller chunks pay more per-op dispatch: 1 << 18 was 1.08-1.20x slower on the
benchmark CNN's activations, 1 << 20 3-7% faster but with an 8 MiB working set, more than a
core's share of cache on many machines (``benchmarks/capture_chunk.py``). Unused where the C
kernel (:mod:`._native`) reduces the maps."""


def scratch_size(x: Tensor) -> int:
    """Float32 elements of scratch the conv-map reductions of ``x`` (units on dim 1) need: none
    where the C kernel takes them."""
    if _native.takes(x):
        return 0
    if x.device.type != "cpu":
        return x.numel()
    per_sample = x[0].numel() if x.shape[0] else 1
    return min(x.numel(), max(1, CPU_CHUNK // max(per_sample, 1)) * per_sample)


def _map_reductions(x: Tensor, eps: float, scratch: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per-map sum, sum of squares and zero count of ``x`` ``(N, D, *positions)``, each ``(N, D)``,
    and per-unit min and max, each ``(D,)``: float32 (float64 for float64 input). The eager path,
    for where the C kernel (:mod:`._native`) does not take ``x``.

    Zero counts are float sums of a 0/1 mask (exact below 2**24 entries per map). On CPU the
    batch is cut into chunks of about :data:`CPU_CHUNK` entries so that each chunk is read from
    cache, not memory, by all five reductions.
    """
    n, d = x.shape[0], x.shape[1]
    p = x[0, 0].numel()
    fdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    rows = x.reshape(n * d, p)  # a view for contiguous activations, else one copy
    if rows.dtype != fdt:
        rows = rows.to(fdt)  # half/bfloat16: products must accumulate and round in float32
    need = scratch_size(x)
    if scratch is None or scratch.numel() < need or scratch.dtype != fdt:
        scratch = torch.empty(need, dtype=fdt, device=x.device)
    s1 = torch.empty(n * d, dtype=fdt, device=x.device)
    zc = torch.empty(n * d, dtype=fdt, device=x.device)
    s2 = torch.empty(n * d, dtype=fdt, device=x.device)
    mn = torch.empty(n * d, dtype=rows.dtype, device=x.device)
    mx = torch.empty(n * d, dtype=rows.dtype, device=x.device)
    step = max(1, need // max(p, 1))  # rows per chunk: whole samples
    for i in range(0, n * d, step):
        c = rows[i:i + step]
        z = scratch[: c.numel()].view(c.shape)
        if eps > 0:
            torch.abs(c, out=z)
            torch.le(z, eps, out=z)
        else:
            torch.eq(c, 0, out=z)
        torch.sum(c, dim=1, out=s1[i:i + step])
        torch.sum(z, dim=1, out=zc[i:i + step])
        torch.linalg.vector_norm(c, dim=1, out=s2[i:i + step])
        torch.amin(c, dim=1, out=mn[i:i + step])
        torch.amax(c, dim=1, out=mx[i:i + step])
    s2.square_()
    return (s1.view(n, d), s2.view(n, d), mn.view(n, d).amin(dim=0), mx.view(n, d).amax(dim=0), zc.view(n, d))


@dataclass
class StreamingStats:
    """Per-unit running statistics of one layer.

    A *unit* is a feature (Linear) or a channel (conv); an *entry* is one element of the
    activation tensor; a *map* is the entries of one unit for one input sample (the spatial map
    of a channel, or a single entry for 2-D activations).

    Attributes
    ----------
    batches : int
        Hook calls accumulated.
    samples : int
        Input samples (rows of the batch) seen.
    entries_per_unit : int
        Entries seen per unit (``samples x positions``).
    eps : float
        An entry counts as zero when ``|x| <= eps``.
    zeros : Tensor (units,), int64
        Entries counted as zero, per unit.
    zero_maps : Tensor (units,), int64
        Maps whose every entry counts as zero, per unit.
    nonfinite : Tensor (units,), int64
        Maps holding a NaN or Inf, per unit (for 2-D activations: entries).
    mean, m2 : Tensor (units,), float64
        Running mean and sum of squared deviations (Chan et al.'s parallel update), over
        entries.
    min, max : Tensor (units,)
        Running extremes over entries.
    sample_zero_hist : Tensor (HIST_BINS,), int64
        Histogram of each sample's zero fraction over its whole representation.
    """

    units: int
    device: torch.device
    eps: float = 0.0
    batches: int = 0
    samples: int = 0
    entries_per_unit: int = 0
    zeros: Tensor = field(init=False)
    zero_maps: Tensor = field(init=False)
    nonfinite: Tensor = field(init=False)
    mean: Tensor = field(init=False)
    m2: Tensor = field(init=False)
    min: Tensor = field(init=False)
    max: Tensor = field(init=False)
    sample_zero_hist: Tensor = field(init=False)

    def __post_init__(self) -> None:
        d, dev = self.units, self.device
        acc = _acc_dtype(dev)
        self.zeros = torch.zeros(d, dtype=torch.int64, device=dev)
        self.zero_maps = torch.zeros(d, dtype=torch.int64, device=dev)
        self.nonfinite = torch.zeros(d, dtype=torch.int64, device=dev)
        self.mean = torch.zeros(d, dtype=acc, device=dev)
        self.m2 = torch.zeros(d, dtype=acc, device=dev)
        self.min = torch.full((d,), float("inf"), dtype=acc, device=dev)
        self.max = torch.full((d,), float("-inf"), dtype=acc, device=dev)
        self.sample_zero_hist = torch.zeros(HIST_BINS, dtype=torch.int64, device=dev)

    # -- hot path -------------------------------------------------------------------------------
    def update(self, x: Tensor, scratch: Tensor | None = None, *, mask: Tensor | None = None) -> Tensor:
        """Accumulate a batch ``x`` of shape ``(batch, units, *positions)`` (units on dim 1).

        ``mask`` (``(batch, positions)`` bool, True = a real token) leaves padded positions out of
        every statistic: entries, zeros, extremes, the map means (a fully padded sample's are NaN
        and it does not count as a sample) and each sample's zero fraction over its real entries.

        ``scratch`` is an optional float32 buffer of at least :func:`scratch_size` elements reused
        for the zero mask (a fresh allocation costs more than the whole reduction).

        Returns the per-map means ``(batch, units)`` (the spatial mean of each channel), which
        the recorder reuses as the ``reduce="mean"`` rows.

        Conv maps on CPU go to the one-pass C kernel where it is built (:mod:`._native`); the
        code below is the eager path, for 2-D activations, GPUs and installs without the kernel.

        Precision: for 2-D activations mean and M2 are exact two-pass float64 values merged with
        Chan et al.'s update. For conv maps each map's sum and sum of squares are reduced in
        float32 (by the C kernel in float32 blocks of 512 entries added in float64; by the eager
        path in cache-sized chunks on CPU, no temporaries), turned into the map's mean and M2 in
        float64 and merged across maps and batches with Chan's update; the relative error of the
        variance is then about ``1e-7 * (mean / std)^2`` of a map.
        """
        n, d = x.shape[0], x.shape[1]
        acc = self.mean.dtype
        if n == 0:
            return torch.zeros((0, d), dtype=acc, device=x.device)
        if mask is not None:
            return self._update_masked(x, mask)
        if _native.takes(x):  # one pass in C, the state updated in place: the same values as below
            map_means = _native.update_maps(self, x)
            self.entries_per_unit += n * x[0, 0].numel()
            self.samples += n
            self.batches += 1
            return map_means
        if x.ndim == 2:
            xd = x.to(acc)
            map_means = xd
            mean_b = xd.mean(dim=0)
            m2_b = (xd - mean_b).square().sum(dim=0)
            mn, mx = xd.amin(dim=0), xd.amax(dim=0)
            positions = 1
            zmask = (x.abs() <= self.eps) if self.eps > 0 else (x == 0)
            zeros_nc = zmask.to(torch.float32)
        else:
            positions = x[0, 0].numel()
            s1, s2, mn, mx, zeros_nc = _map_reductions(x, self.eps, scratch)
            mn, mx = mn.to(acc), mx.to(acc)
            s1d, s2d = s1.to(acc), s2.to(acc)
            map_means = s1d / positions
            m2_nc = (s2d - s1d * map_means).clamp_(min=0)
            mean_b = map_means.mean(dim=0)
            m2_b = m2_nc.sum(dim=0) + (map_means - mean_b).square().sum(dim=0) * positions
        zeros_l = zeros_nc.to(torch.int64)
        self.zeros += zeros_l.sum(dim=0)
        self.zero_maps += (zeros_l == positions).sum(dim=0)
        dp = d * positions  # bin round((HIST_BINS - 1) * z / dp), halves up, in integers
        idx = (zeros_l.sum(dim=1) * (2 * (HIST_BINS - 1)) + dp).div_(2 * dp, rounding_mode="floor")
        self.sample_zero_hist.index_add_(0, idx, torch.ones_like(idx))
        # a NaN/Inf anywhere in a map makes that map's sum non-finite: count maps, not entries
        self.nonfinite += (~torch.isfinite(map_means)).sum(dim=0)
        self.min = torch.minimum(self.min, mn)
        self.max = torch.maximum(self.max, mx)
        n_b = n * positions
        n_a = self.entries_per_unit
        tot = n_a + n_b
        delta = mean_b - self.mean
        self.mean += delta * (n_b / tot)
        self.m2 += m2_b + delta * delta * (n_a * n_b / tot)
        self.entries_per_unit = tot
        self.samples += n
        self.batches += 1
        return map_means

    def _update_masked(self, x: Tensor, mask: Tensor) -> Tensor:
        """:meth:`update` of a sequence batch ``(n, d, t)`` whose padded positions are left out."""
        n, d = x.shape[0], x.shape[1]
        acc = self.mean.dtype
        m = mask.reshape(n, 1, -1)
        xd = x.reshape(n, d, -1).to(acc)
        cnt = mask.reshape(n, -1).sum(dim=1)  # real positions per sample, int64
        cnt_f = cnt.to(acc)
        masked = torch.where(m, xd, 0.0)
        s1 = masked.sum(dim=2)
        map_means = s1 / cnt_f[:, None]  # NaN rows for fully padded samples
        dev = torch.where(m, xd - torch.where(cnt_f[:, None] > 0, map_means, 0.0)[:, :, None], 0.0)
        m2_nc = dev.square().sum(dim=2)
        zero = ((x.abs() <= self.eps) if self.eps > 0 else (x == 0)).reshape(n, d, -1) & m
        zeros_l = zero.sum(dim=2)  # (n, d) int64
        real = cnt > 0
        tot_b = cnt.sum()
        n_b = tot_b.to(acc)
        self.zeros += zeros_l.sum(dim=0)
        self.zero_maps += ((zeros_l == cnt[:, None]) & real[:, None]).sum(dim=0)
        dp = (d * cnt).clamp(min=1)
        idx = (zeros_l.sum(dim=1) * (2 * (HIST_BINS - 1)) + dp).div_(2 * dp, rounding_mode="floor")
        self.sample_zero_hist.index_add_(0, idx, real.to(torch.int64))
        self.nonfinite += (~torch.isfinite(map_means) & real[:, None]).sum(dim=0)
        inf = torch.tensor(float("inf"), dtype=acc, device=x.device)
        self.min = torch.minimum(self.min, torch.where(m, xd, inf).amin(dim=(0, 2)))
        self.max = torch.maximum(self.max, torch.where(m, xd, -inf).amax(dim=(0, 2)))
        mean_b = s1.sum(dim=0) / n_b.clamp(min=1)
        spread = torch.where(real[:, None], map_means - mean_b, 0.0).square() * cnt_f[:, None]
        m2_b = m2_nc.sum(dim=0) + spread.sum(dim=0)
        b = int(tot_b)  # the host needs the count (one synchronisation, only under a mask)
        a = self.entries_per_unit
        if b:
            delta = mean_b - self.mean
            self.mean += delta * (b / (a + b))
            self.m2 += m2_b + delta * delta * (a * b / (a + b))
        self.entries_per_unit = a + b
        self.samples += int(real.sum())
        self.batches += 1
        return map_means

    # -- read side ------------------------------------------------------------------------------
    def var(self, correction: int = 0) -> Tensor:
        """Per-unit variance over entries (population variance by default)."""
        denom = self.entries_per_unit - correction
        if denom <= 0:
            return torch.full_like(self.m2, float("nan"))
        return self.m2 / denom

    def std(self, correction: int = 0) -> Tensor:
        """Per-unit standard deviation over entries."""
        return self.var(correction).sqrt()

    def merge(self, other: StreamingStats) -> None:
        """Fold ``other`` (same units) into ``self``: the exact statistics of the union."""
        if other.units != self.units:
            raise ValueError(f"cannot merge statistics of {other.units} units into {self.units}")
        if other.entries_per_unit == 0:
            return
        n_a, n_b = self.entries_per_unit, other.entries_per_unit
        tot = n_a + n_b
        o_mean = other.mean.to(self.device, self.mean.dtype)
        delta = o_mean - self.mean
        self.mean += delta * (n_b / tot)
        self.m2 += other.m2.to(self.device, self.m2.dtype) + delta * delta * (n_a * n_b / tot)
        for name in ("zeros", "zero_maps", "nonfinite", "sample_zero_hist"):
            getattr(self, name).add_(getattr(other, name).to(self.device))
        self.min = torch.minimum(self.min, other.min.to(self.device, self.min.dtype))
        self.max = torch.maximum(self.max, other.max.to(self.device, self.max.dtype))
        self.entries_per_unit = tot
        self.samples += other.samples
        self.batches += other.batches

    def nbytes(self) -> int:
        """Bytes held by the statistics tensors."""
        return sum(t.numel() * t.element_size() for t in (
            self.zeros, self.zero_maps, self.nonfinite, self.mean, self.m2, self.min, self.max,
            self.sample_zero_hist))
