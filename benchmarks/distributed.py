"""Cost of ``rec.table()`` when it combines 2 gloo ranks, against the same table on one rank.

Two CPU processes join a gloo process group; each feeds its own half of the data to a
recorder. On rank 0, in the same process and with alternating repeats, we time

* ``local``: ``rec.table()`` of a recorder with ``distributed=False`` (one rank's data, no
  collectives), and
* ``2 ranks``: ``rec.table()`` of a recorder with the default ``distributed=True`` (all ranks'
  statistics and reservoirs combined with torch.distributed collectives, then the metrics),

both on identical buffers, and print the medians and their ratio, plus the bytes each rank sends
per layer. Run: ``python benchmarks/distributed.py [--quick]``.
"""

from __future__ import annotations

import argparse
import datetime
import socket
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import repdiag
from repdiag.capture._distributed import gather_layer_data
from repdiag.models import small_cnn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import alternate, machine, median, paired_ratio, print_table  # noqa: E402

METRICS = ["sparsity", "dead_units", "mean", "std", "nonfinite"]


def _worker(rank: int, port: int, batches: int, repeats: int, max_samples: int) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    torch.manual_seed(0)
    model = small_cnn(norm="bn")
    g = torch.Generator().manual_seed(rank)
    recs = {name: repdiag.attach(model, metrics=METRICS, max_samples=max_samples, distributed=opt)
            for name, opt in (("local", False), ("2 ranks", True))}
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(128, 1, 8, 8, generator=g))
            for rec in recs.values():
                rec.step(labels=torch.randint(0, 10, (128,), generator=g))
    names = list(recs)
    times = alternate([recs[k].table for k in names], repeats, sync=dist.barrier)
    report: dict[str, int] = {}
    gather_layer_data(recs["2 ranks"], report=report)
    if rank == 0:
        rec = recs["local"]
        print(machine())
        print(f"2 gloo ranks on CPU, small_cnn(norm='bn'), {batches} batches of 128 per rank, "
              f"max_samples={max_samples}, reduce='mean', metrics={METRICS}\n")
        rows: list[list[object]] = []
        for lay in rec.layers:
            x, _ = rec.samples(lay)
            rows.append([lay, x.shape[1], x.shape[0], f"{report.get(lay, 0):,}"])
        rows.append(["total", "", "", f"{sum(report.values()):,}"])
        print_table(["layer", "units", "rows buffered per rank", "bytes sent per rank"], rows)
        print()
        print_table(["rec.table()", f"median of {repeats} (ms)"],
                    [[k, f"{median(t) * 1e3:.2f}"] for k, t in zip(names, times)])
        print(f"\nratio 2 ranks / local (median of paired ratios): {paired_ratio(times[1], times[0]):.2f}x")
    for rec in recs.values():
        rec.detach()
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer batches and repeats (a few seconds)")
    args = p.parse_args()
    batches, repeats = (8, 5) if args.quick else (32, 15)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, batches, repeats, 4096), nprocs=2)


if __name__ == "__main__":
    main()
