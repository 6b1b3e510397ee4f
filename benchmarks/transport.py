"""Earth Mover kernels: repdiag against SciPy and POT on the same data, side by side.

Cases (targets from issue 4):

- per-unit W1, 512 units x 10,000 samples (float32): ``wasserstein_1d`` against a loop of
  ``scipy.stats.wasserstein_distance`` over units; target >= 5x. Also unequal sizes (no target).
- sliced W1, n = 10,000, d = 512, 128 projections (float32): ``sliced_wasserstein`` against
  ``ot.sliced_wasserstein_distance``, each drawing its own projections; target >= 3x. Also with
  the same projections given to both (no target).
- exact W1, n = 1,000, d = 64 (float64), cost matrix included: ``emd`` against ``ot.dist`` +
  ``ot.emd2``; target >= 1x. Also unequal sizes (both then run network simplex; no target).

Calls alternate (repdiag, reference, reference, repdiag, ...) after one untimed warm-up round;
the ratio is the median of per-repeat ratios reference / repdiag (> 1: repdiag is faster).
``max |diff|`` is the largest difference between the two results (sliced with own draws differs
by Monte-Carlo error only).

    python benchmarks/transport.py [--repeats 5] [--threads N] [--quick]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import alternate, machine, median, paired_ratio, print_table  # noqa: E402

from repdiag.functional import emd, sliced_wasserstein, wasserstein_1d  # noqa: E402


def _to_float(x: Any) -> np.ndarray:
    return x.double().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="smaller sizes: checks the script, not the targets")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import ot
    from scipy.stats import wasserstein_distance

    shrink = 10 if args.quick else 1
    g = np.random.default_rng(0)
    cases: list[tuple[str, Callable[[], Any], Callable[[], Any], float | None]] = []

    n, d = 10_000 // shrink, 512 // shrink
    for m, target in ((n, 5.0), ((8 * n) // 10, None)):
        a = g.normal(size=(n, d)).astype(np.float32)
        b = (g.normal(size=(m, d)) * 1.3 + 0.2).astype(np.float32)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        cases.append((f"per-unit W1, {d} units, {n} vs {m} samples  [scipy loop]",
                      lambda ta=ta, tb=tb: wasserstein_1d(ta, tb),
                      lambda a=a, b=b: np.array([wasserstein_distance(a[:, j], b[:, j]) for j in range(a.shape[1])]),
                      target))

    a = g.normal(size=(n, d)).astype(np.float32)
    b = (g.normal(size=(n, d)) + 0.1).astype(np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    proj = ot.sliced.get_random_projections(d, 128, seed=0).astype(np.float32)
    tp = torch.from_numpy(proj)
    cases.append((f"sliced W1, n={n}, d={d}, 128 projections, own draws  [POT]",
                  lambda: sliced_wasserstein(ta, tb, 128, p=1, seed=0),
                  lambda: ot.sliced_wasserstein_distance(a, b, n_projections=128, p=1, seed=0), 3.0))
    cases.append((f"sliced W1, n={n}, d={d}, the same 128 projections  [POT]",
                  lambda: sliced_wasserstein(ta, tb, p=1, projections=tp),
                  lambda: ot.sliced_wasserstein_distance(a, b, p=1, projections=proj), None))

    ne = 1000 // (2 if args.quick else 1)
    for m, target in ((ne, 1.0), ((9 * ne) // 10, None)):
        a64 = g.normal(size=(ne, 64))
        b64 = g.normal(size=(m, 64)) + 0.1
        ta64, tb64 = torch.from_numpy(a64), torch.from_numpy(b64)
        cases.append((f"exact W1, n={ne} vs {m}, d=64, with cost matrix  [ot.dist + ot.emd2]",
                      lambda ta=ta64, tb=tb64: emd(ta, tb),
                      lambda a=a64, b=b64: ot.emd2([], [], ot.dist(a, b, metric="euclidean"), numItermax=10**8),
                      target))

    print(machine())
    print(f"POT {ot.__version__}; median of {args.repeats} alternating repeats"
          f"{'; QUICK sizes, targets not checked' if args.quick else ''}\n")
    rows = []
    missed = False
    for name, ours, ref, target in cases:
        diff = float(np.max(np.abs(_to_float(ours()) - _to_float(ref()))))
        t_ours, t_ref = alternate([ours, ref], args.repeats)
        ratio = paired_ratio(t_ref, t_ours)
        verdict = "-" if target is None else (f">= {target:g}x " + ("met" if ratio >= target else "MISSED"))
        missed |= target is not None and ratio < target
        rows.append([name, f"{median(t_ours) * 1e3:.1f}", f"{median(t_ref) * 1e3:.1f}", f"{ratio:.1f}x", verdict,
                     f"{diff:.1e}"])
    print_table(["case  [reference]", "repdiag ms", "reference ms", "ratio", "target", "max |diff|"], rows)
    return 1 if missed and not args.quick else 0


if __name__ == "__main__":
    raise SystemExit(main())
