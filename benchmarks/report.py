"""The report's UMAP work: what numba's on-disk cache saves a fresh process, and serial against
parallel fits of the (run, layer) embeddings a report makes.

1. A fresh process importing umap and fitting once (``--samples`` x 64, 10 blobs), timed inside
   it: with an empty numba cache (the first run on a machine; ``--no-cold`` skips it), with the
   cache warm as repdiag uses it (``load_umap``: numba's cache switched on for umap's and
   pynndescent's functions), and with the same warm cache but umap as shipped (a plain
   ``import umap``: only the functions umap-learn itself declares ``cache=True`` load). The two
   warm arms alternate.
2. ``--fits`` embeddings of ``--samples`` x 64 in one process (numba warm), one at a time
   against ``embed_many(..., workers=W)`` (W - 1 spawned workers beside this process, started
   anew each time as a report starts them), alternating, median of ``--repeats``.

    python benchmarks/report.py [--samples 1000] [--fits 6] [--workers W] [--repeats 3]
                                [--process-repeats 3] [--no-cold] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import alternate, machine, median, paired_ratio, print_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

_PROCESS = """
import sys, time, warnings
t0 = time.perf_counter()
import numpy as np
from repdiag.report import embed, load_umap, numba_cache_dir
if sys.argv[1] == "repdiag":
    load_umap()
else:  # umap as shipped: the cache dir set, nothing switched on
    numba_cache_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import umap
    import repdiag.report._embedding as e
    e.enable_numba_cache = lambda packages=(): 0
    e.load_umap = lambda: umap
rng = np.random.default_rng(0)
n = int(sys.argv[2])
x = rng.normal(size=(n, 64)) + np.repeat(np.arange(10.0), -(-n // 10))[:n, None] * 3
embed(x, "umap", seed=0)
print(time.perf_counter() - t0)
"""


def _process(arm: str, samples: int, cache: Path) -> float:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _PROCESS, arm, str(samples)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{arm} process failed:\n{proc.stderr[-2000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def _blobs(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 64)) + np.repeat(np.arange(10.0), -(-n // 10))[:n, None] * 3


def main() -> None:
    from repdiag.report import available_cores, embed_many, embed_workers, numba_cache_dir, warm_up_umap

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--fits", type=int, default=6, help="embeddings of a report (default 6: 2 runs x 3 layers)")
    ap.add_argument("--workers", type=int, default=None, help="parallel arm (default: max(2, embed_workers(fits)))")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--process-repeats", type=int, default=3)
    ap.add_argument("--no-cold", action="store_true", help="skip the process with an empty numba cache")
    ap.add_argument("--quick", action="store_true", help="one repeat of each, 200 samples (checks the script)")
    args = ap.parse_args()
    if args.quick:
        args.samples, args.repeats, args.process_repeats = 200, 1, 1
    workers = args.workers or max(2, embed_workers(args.fits))
    print(f"machine: {machine()}; {available_cores()} cores available, embed_workers({args.fits}) = "
          f"{embed_workers(args.fits)}")

    rows = []
    cache = Path(tempfile.mkdtemp(prefix="repdiag-bench-numba-"))
    if not args.no_cold:
        cold = _process("repdiag", args.samples, cache)
    else:
        _process("repdiag", args.samples, cache)  # fills the cache, untimed
    warm: dict[str, list[float]] = {"repdiag": [], "shipped": []}
    for r in range(args.process_repeats):
        for arm in (("repdiag", "shipped") if r % 2 == 0 else ("shipped", "repdiag")):
            warm[arm].append(_process(arm, args.samples, cache))
    base = median(warm["repdiag"])
    if not args.no_cold:
        rows.append(["fresh process, empty numba cache", f"{cold:.2f}", f"{cold / base:.2f}", "compiles umap + pynndescent"])
    rows.append(["fresh process, warm cache (repdiag)", f"{base:.2f}", "1.00",
                 f"runs {', '.join(f'{t:.1f}' for t in warm['repdiag'])} s"])
    rows.append(["fresh process, warm cache, umap as shipped", f"{median(warm['shipped']):.2f}",
                 f"{paired_ratio(warm['shipped'], warm['repdiag']):.2f}",
                 f"runs {', '.join(f'{t:.1f}' for t in warm['shipped'])} s; umap's own functions compiled again"])
    print(f"\nimport umap + one fit of {args.samples} x 64 in a fresh process (timed inside it):")
    print_table(["arm", "median s", "ratio to warm (repdiag)", "notes"], rows)

    os.environ["NUMBA_CACHE_DIR"] = str(cache)
    numba_cache_dir()
    warm_up_umap()
    xs = [_blobs(args.samples, k) for k in range(args.fits)]
    results: dict[str, list[np.ndarray]] = {}

    def run(w: int) -> None:
        results[str(w)] = embed_many(xs, "umap", seed=0, workers=w)

    t0 = time.perf_counter()
    serial, parallel = alternate([lambda: run(1), lambda: run(workers)], repeats=args.repeats, warmup=0)
    same = all(np.array_equal(a, b) for a, b in zip(results["1"], results[str(workers)]))
    print(f"\n{args.fits} fits of {args.samples} x 64 in one process ({time.perf_counter() - t0:.0f} s in all):")
    print_table(["arm", "median s", "ratio to serial", "notes"], [
        ["serial (workers=1)", f"{median(serial):.2f}", "1.00", f"runs {', '.join(f'{t:.1f}' for t in serial)} s"],
        [f"parallel (workers={workers})", f"{median(parallel):.2f}", f"{paired_ratio(parallel, serial):.2f}",
         f"runs {', '.join(f'{t:.1f}' for t in parallel)} s; {workers - 1} spawned; results bitwise equal: {same}"],
    ])


if __name__ == "__main__":
    main()
