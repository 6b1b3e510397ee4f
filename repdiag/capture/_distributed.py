"""Combine every rank's buffers and streaming statistics with ``torch.distributed`` collectives.

Under DistributedDataParallel each rank sees a shard of the data, so a per-rank table is wrong.
:func:`gather_shards` turns the per-rank state of each layer into the state one process would
hold had it seen every rank's data:

* **Streaming statistics** are combined exactly: counts and histograms add, extremes take the
  min/max, and moments merge with Chan et al.'s pairwise update
  (:meth:`StreamingStats.merge`), folded in rank order.
* **Reservoirs** are merged into a uniform sample of the union. With ``N_r`` rows seen on rank
  ``r``, ``N = sum_r N_r`` and capacity ``c``, the merged sample holds ``m = min(N, c)`` rows;
  how many come from each rank, ``(m_0, ..., m_{R-1})``, is a multivariate hypergeometric draw
  (``m`` draws without replacement from an urn with ``N_r`` balls of colour ``r``), and rank
  ``r`` then contributes ``m_r`` rows taken uniformly from its own reservoir (``m_r <= min(N_r,
  c)``, the reservoir's size). A uniform subset of a uniform subset is uniform, so the result is
  an exact uniform sample of the union; when ``c >= N`` it is the union itself, ordered by rank
  and, within a rank, by slot (the order one process fed the ranks' data in turn would hold).

Transport is ``torch.distributed`` only: one ``all_gather_object`` of a small description of
each rank's layers, then one ``all_gather`` (``dst="all"``) or ``gather`` (``dst=0``) per
buffer dtype. gloo works on CPU tensors, NCCL on CUDA tensors. Before any of that, with gloo, a
``monitored_barrier`` with a timeout makes a missing rank an error naming it rather than a hang;
with NCCL the process group's own timeout applies. Every rank then checks that all ranks hold the
same layers (names, units, row width, dtype, capacity); all ranks see the same descriptions, so a
difference makes every rank raise :class:`~repdiag.DistributedError` naming the layers.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from .._errors import ConfigError, DistributedError
from ..metrics._registry import LayerData
from ._stats import HIST_BINS, StreamingStats

__all__ = ["Shard", "gather_shards", "gather_layer_data", "merge_reservoirs", "recorder_shards", "sync_target",
           "rank_seed", "payload_bytes"]

Dst = Union[int, Literal["all"]]
_INT_FIELDS = ("zeros", "zero_maps", "nonfinite")
_FLOAT_FIELDS = ("mean", "m2", "min", "max")


@dataclass
class Shard:
    """One layer's state on one rank (or, after :func:`gather_shards`, on all ranks together).

    Attributes
    ----------
    name, module : str
        Module path and class name.
    depth : int or None
        Forward-order position (None when the layer never ran on this rank).
    stats : StreamingStats or None
        Streaming statistics (None when the layer never ran).
    samples : Tensor (k, d) or None
        A uniform sample of the ``rows_seen`` rows offered to the layer's reservoir.
    labels : Tensor (k,), int64, or None
        Labels beside ``samples`` (``-1`` = unknown).
    rows_seen : int
        Rows offered to the reservoir since its last reset.
    """

    name: str
    module: str
    depth: int | None
    stats: StreamingStats | None
    samples: Tensor | None
    labels: Tensor | None
    rows_seen: int


def sync_target(option: bool | str) -> Dst | None:
    """Where gathered results go for a recorder's ``distributed`` option: ``"all"``, ``0``, or
    None when ``torch.distributed`` is not initialised or the option is False."""
    if option is False or not (dist.is_available() and dist.is_initialized()):
        return None
    return 0 if option == "rank0" else "all"


def rank_seed(seed: int, option: bool | str) -> int:
    """Seed of this rank's reservoirs: ``seed`` offset by the rank, so ranks draw independently
    (their samples are then independent, as a uniform sample of the union requires)."""
    if sync_target(option) is None:
        return seed
    return seed + 1_000_003 * dist.get_rank()


def _counts(seen: Sequence[int], capacity: int, seed: Sequence[int]) -> list[int]:
    """Rows each rank contributes: a multivariate hypergeometric draw of ``min(N, capacity)``."""
    total = sum(seen)
    m = min(total, capacity)
    if m == total:
        return list(seen)
    rng = np.random.default_rng([*seed, 0x5EED])
    return [int(c) for c in rng.multivariate_hypergeometric(np.asarray(seen, dtype=np.int64), m)]


def _pick(k: int, m: int, seed: Sequence[int], rank: int, device: torch.device) -> Tensor:
    """``m`` of ``k`` slot indices, uniformly without replacement, in slot order."""
    if m >= k:
        return torch.arange(k, device=device)
    idx = np.sort(np.random.default_rng([*seed, rank]).choice(k, size=m, replace=False))
    return torch.as_tensor(idx, dtype=torch.int64, device=device)


def merge_reservoirs(
    parts: Sequence[tuple[Tensor, Tensor, int]], capacity: int, seed: int | Sequence[int] = 0
) -> tuple[Tensor, Tensor]:
    """Merge per-rank reservoirs ``(samples (k_r, d), labels (k_r,), rows_seen N_r)`` into a
    uniform sample of the union, in one process (what :func:`gather_shards` does across ranks).

    Returns ``min(sum N_r, capacity)`` rows and their labels.

    Examples
    --------
    >>> import torch
    >>> a, b = torch.arange(3.0)[:, None], torch.arange(3.0, 5.0)[:, None]
    >>> x, y = merge_reservoirs([(a, torch.zeros(3, dtype=torch.long), 3),
    ...                          (b, torch.ones(2, dtype=torch.long), 2)], capacity=8)
    >>> x.flatten().tolist(), y.tolist()
    ([0.0, 1.0, 2.0, 3.0, 4.0], [0, 0, 0, 1, 1])
    """
    seeds = [seed] if isinstance(seed, int) else list(seed)
    for x, _, n in parts:
        if x.shape[0] != min(n, capacity):
            raise ConfigError(f"a reservoir of capacity {capacity} that saw {n} rows must hold "
                              f"{min(n, capacity)}; got {x.shape[0]}.")
    counts = _counts([n for _, _, n in parts], capacity, seeds)
    xs, ys = [], []
    for r, ((x, y, _), m) in enumerate(zip(parts, counts)):
        idx = _pick(x.shape[0], m, seeds, r, x.device)
        xs.append(x[idx])
        ys.append(y[idx])
    return torch.cat(xs), torch.cat(ys)


def _describe(s: Shard, capacity: int, eps: float) -> dict[str, Any]:
    st = s.stats
    return {
        "name": s.name, "module": s.module, "depth": s.depth, "capacity": capacity, "eps": eps,
        "units": None if st is None else st.units,
        "acc": None if st is None else str(st.mean.dtype),
        "ints": (0, 0, 0) if st is None else (st.batches, st.samples, st.entries_per_unit),
        "width": None if s.samples is None else int(s.samples.shape[1]),
        "dtype": None if s.samples is None else str(s.samples.dtype),
        "seen": s.rows_seen, "kept": 0 if s.samples is None else int(s.samples.shape[0]),
    }


def _agree(metas: list[list[dict[str, Any]]]) -> None:
    """Raise DistributedError (the same on every rank) when the ranks' layer sets differ."""
    names = [[m["name"] for m in rank] for rank in metas]
    union = sorted(set().union(*names))
    lacking = {r: [n for n in union if n not in set(ns)] for r, ns in enumerate(names)}
    if any(lacking.values()):
        detail = "; ".join(f"rank {r} lacks {v}" for r, v in lacking.items() if v)
        raise DistributedError(
            f"ranks record different layer sets ({detail}). Attach the same model with the same "
            "layers=... on every rank before the first table(), or pass distributed=False for per-rank tables.")
    bad = []
    for key in ("units", "width", "dtype", "acc", "capacity", "eps"):
        for name in names[0]:
            vals = {r: rank[names[r].index(name)][key] for r, rank in enumerate(metas)}
            known = {v for v in vals.values() if v is not None}
            if len(known) > 1:
                bad.append(f"layer {name!r} {key}: " + ", ".join(f"rank {r}={v}" for r, v in vals.items()))
    if bad:
        raise DistributedError("ranks disagree on " + "; ".join(bad) + ". Every rank must record the same "
                               "layers with the same options (max_samples, reduce, sparsity_eps).")


def _device(group: Any) -> torch.device:
    if "nccl" in str(dist.get_backend(group)) and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _timedelta(timeout: float | datetime.timedelta | None, group: Any) -> datetime.timedelta:
    if isinstance(timeout, datetime.timedelta):
        return timeout
    if timeout is not None:
        return datetime.timedelta(seconds=float(timeout))
    try:  # the process group's own timeout (private attribute; fall back to torch's default)
        pg: Any = group or dist.group.WORLD
        td = pg._get_backend(torch.device("cpu")).options._timeout
        return td if isinstance(td, datetime.timedelta) else datetime.timedelta(minutes=30)
    except Exception:  # noqa: BLE001
        return datetime.timedelta(minutes=30)


def _collective(what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
    try:
        fn(*args, **kwargs)
    except DistributedError:
        raise
    except RuntimeError as exc:  # DistBackendError, DistStoreError, gloo timeouts are RuntimeErrors
        raise DistributedError(
            f"repdiag's {what} across ranks failed on rank {dist.get_rank()}: {exc}. Another rank failed, "
            "left, or did not call table()/snapshot() at the same point; every rank must call them together."
        ) from exc


def payload_bytes(metas: list[dict[str, Any]], counts: Sequence[int], hist_bins: int = HIST_BINS) -> int:
    """Bytes one rank sends for one layer (statistics plus at most ``max(counts)`` rows)."""
    m = metas[0]
    units, width = m["units"] or 0, m["width"] or 0
    rows = max(counts) if counts else 0
    sample_size = torch.empty(0, dtype=getattr(torch, m["dtype"].split(".")[-1])).element_size() if m["dtype"] else 0
    return 8 * (3 * units + hist_bins + rows) + 8 * 4 * units + rows * width * sample_size


def gather_shards(
    shards: Sequence[Shard],
    *,
    capacity: int,
    dst: Dst = "all",
    seed: int | Sequence[int] = 0,
    eps: float = 0.0,
    group: Any = None,
    timeout: float | datetime.timedelta | None = None,
    report: dict[str, int] | None = None,
) -> list[Shard] | None:
    """Combine every rank's ``shards`` (one per layer, same layers on every rank).

    Every rank of ``group`` must call this with the same ``dst``, ``capacity`` and ``seed``.

    Parameters
    ----------
    shards : sequence of Shard
        This rank's layers, in forward order.
    capacity : int
        Most rows of the merged sample (the recorder's ``max_samples``).
    dst : 0 or "all"
        Group rank that receives the result, or every rank.
    seed : int or sequence of int
        Seed of the merge's draws; the same on every rank, so ``dst="all"`` gives every rank the
        same sample.
    timeout : float (seconds), timedelta or None
        How long to wait for the other ranks (gloo's ``monitored_barrier``); None takes the
        process group's timeout.
    report : dict, optional
        Filled with ``{layer: bytes this rank sent}``.

    Returns
    -------
    list of Shard or None
        On receiving ranks, the merged layers that hold data on some rank (forward order of
        rank 0); None on other ranks.

    Raises
    ------
    DistributedError
        Ranks hold different layers or options, a rank did not arrive within the timeout, or a
        collective failed.
    """
    seeds = [seed] if isinstance(seed, int) else list(seed)
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    if dst != "all" and (isinstance(dst, bool) or not isinstance(dst, int) or not 0 <= dst < world):
        raise ConfigError(f"dst must be 'all' or a rank in [0, {world}); got {dst!r}.")
    td = _timedelta(timeout, group)
    if "gloo" in str(dist.get_backend(group)):
        _collective("monitored barrier", dist.monitored_barrier, group=group, timeout=td, wait_all_ranks=True)
    metas: list[Any] = [None] * world
    mine = [_describe(s, capacity, eps) for s in shards]
    _collective("layer description exchange", dist.all_gather_object, metas, mine, group=group)
    _agree(metas)
    dev = _device(group)
    local = {s.name: s for s in shards}
    plan = []  # (name, metas across ranks, counts)
    for name in (m["name"] for m in metas[0]):
        across = [next(m for m in rank_metas if m["name"] == name) for rank_metas in metas]
        known = [m for m in across if m["units"] is not None and m["width"] is not None]
        if sum(m["seen"] for m in across) == 0 or not known:
            continue
        plan.append((name, known, across, _counts([m["seen"] for m in across], capacity, seeds)))
    ints: list[Tensor] = []
    floats: list[Tensor] = []
    rows: dict[str, list[Tensor]] = {}
    for name, known, across, counts in plan:
        units, width, acc = known[0]["units"], known[0]["width"], getattr(torch, known[0]["acc"].split(".")[-1])
        sdtype = getattr(torch, known[0]["dtype"].split(".")[-1])
        s, cap = local[name], max(counts)
        st = s.stats if s.stats is not None else StreamingStats(units, dev)
        ints += [getattr(st, f).to(dev) for f in _INT_FIELDS] + [st.sample_zero_hist.to(dev)]
        floats += [getattr(st, f).to(dev, acc) for f in _FLOAT_FIELDS]
        lab = torch.full((cap,), -1, dtype=torch.int64, device=dev)
        x = torch.zeros((cap, width), dtype=sdtype, device=dev)
        if s.samples is not None and s.labels is not None and counts[rank]:
            idx = _pick(s.samples.shape[0], counts[rank], seeds, rank, s.samples.device)
            lab[: counts[rank]] = s.labels[idx].to(dev)
            x[: counts[rank]] = s.samples[idx].to(dev)
        ints.append(lab)
        rows.setdefault(str(sdtype), []).append(x.flatten())
        if report is not None:
            report[name] = payload_bytes(known, counts)
    flat = [torch.cat(ints) if ints else torch.zeros(0, dtype=torch.int64, device=dev),
            torch.cat(floats) if floats else torch.zeros(0, dtype=torch.float64, device=dev),
            *(torch.cat(v) for _, v in sorted(rows.items()))]
    got: list[list[Tensor]] = []
    for buf in flat:
        receives = dst == "all" or rank == dst
        out = [torch.empty_like(buf) for _ in range(world)] if receives else None
        if dst == "all":
            _collective("all_gather", dist.all_gather, out, buf, group=group)
        else:
            root = int(dst) if group is None else dist.get_global_rank(group, int(dst))
            _collective("gather", dist.gather, buf, out, dst=root, group=group)
        got.append(out or [])
    if dst != "all" and rank != dst:
        return None
    return _unpack(plan, got, local, dev, world, eps)


def _unpack(plan: list[Any], got: list[list[Tensor]], local: dict[str, Shard], dev: torch.device, world: int,
            eps: float) -> list[Shard]:
    """Rebuild merged shards from the gathered flat buffers (inverse of the packing above)."""
    offs = {"i": [0] * world, "f": [0] * world}
    row_offs: dict[str, list[int]] = {}
    dtypes = sorted({str(getattr(torch, p[1][0]["dtype"].split(".")[-1])) for p in plan})
    row_bufs = dict(zip(dtypes, got[2:]))

    def take(kind: str, bufs: list[Tensor], r: int, n: int) -> Tensor:
        o = offs[kind][r]
        offs[kind][r] = o + n
        return bufs[r][o:o + n]

    out = []
    for name, known, across, counts in plan:
        units, width = known[0]["units"], known[0]["width"]
        sdtype = str(getattr(torch, known[0]["dtype"].split(".")[-1]))
        s = local[name]
        out_dev = s.stats.device if s.stats is not None else dev
        merged = StreamingStats(units, out_dev, eps=eps)
        xs, ys = [], []
        cap = max(counts)
        for r in range(world):
            part = StreamingStats(units, dev, eps=eps)
            part.batches, part.samples, part.entries_per_unit = across[r]["ints"]
            for f in _INT_FIELDS:
                setattr(part, f, take("i", got[0], r, units))
            part.sample_zero_hist = take("i", got[0], r, HIST_BINS)
            for f in _FLOAT_FIELDS:
                setattr(part, f, take("f", got[1], r, units))
            labels = take("i", got[0], r, cap)
            o = row_offs.setdefault(sdtype, [0] * world)
            x = row_bufs[sdtype][r][o[r]:o[r] + cap * width].view(cap, width)
            o[r] += cap * width
            merged.merge(part)
            xs.append(x[: counts[r]])
            ys.append(labels[: counts[r]])
        depth = next((m["depth"] for m in across if m["depth"] is not None), None)
        sample_dev = s.samples.device if s.samples is not None else out_dev
        out.append(Shard(name, known[0]["module"], depth, merged, torch.cat(xs).to(sample_dev),
                         torch.cat(ys).to(sample_dev), sum(m["seen"] for m in across)))
    return out


def recorder_shards(rec: Any) -> list[Shard]:
    """This rank's shards of a :class:`~repdiag.capture.Recorder` (every hooked layer)."""
    out = []
    for lay in rec._ordered():
        x = y = None
        if lay.reservoir.data is not None:
            x, y = lay.reservoir.rows()
        out.append(Shard(lay.name, lay.kind, lay.depth, lay.stats, x, y, lay.reservoir.seen))
    return out


def gather_layer_data(rec: Any, report: dict[str, int] | None = None) -> list[LayerData] | None:
    """The recorder's :class:`LayerData` over all ranks (None on ranks that do not receive)."""
    dst = sync_target(rec.distributed)
    if dst is None:
        raise DistributedError("gather_layer_data needs an initialised torch.distributed process group.")
    merged = gather_shards(recorder_shards(rec), capacity=rec.max_samples, dst=dst, seed=[rec.seed, rec.step_count],
                           eps=rec.sparsity_eps, timeout=rec.distributed_timeout, report=report)
    if merged is None:
        return None
    modules = {lay.name: lay.module for lay in rec._layers.values()}
    return [LayerData(s.name, s.module, int(s.depth or 0), s.samples, s.labels, s.stats, rec.inner, modules[s.name])
            for s in merged]
