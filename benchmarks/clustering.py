"""Silhouette and k-means: repdiag against scikit-learn on the same data, side by side.

Data: n=10,000 samples, d=512, 10 Gaussian clusters, float32 (CPU, or the GPU when present for the
repdiag side). Silhouette is also timed against the floor any exact method pays: the bare
``n x n x d`` product ``x @ x.T``, the faster of PyTorch's (MKL in the CPU wheels) and numpy's
(OpenBLAS; ``x @ y.T`` with ``y`` a copy, as ``x @ x.T`` dispatches to the slower SYRK) at the same
shape and dtype, per repeat. repdiag forms only the upper triangle of the (symmetric)
distance matrix, so it can beat that floor. Calls alternate (ours, theirs, floor, ...) after one
untimed warm-up round; the printed ratios are medians of per-repeat ratios.

    python benchmarks/clustering.py [--n 10000] [--d 512] [--k 10] [--repeats 3] [--n-init 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import alternate, machine, median, paired_ratio, print_table  # noqa: E402

from repdiag.functional import kmeans, silhouette_score  # noqa: E402


def blobs(n: int, d: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g) * 0.5
    labels = torch.randint(0, k, (n,), generator=g)
    return (centres[labels] + torch.randn(n, d, generator=g) * 0.3).float(), labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--kmeans-repeats", type=int, default=3)
    ap.add_argument("--n-init", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score as sk_silhouette
    from threadpoolctl import threadpool_limits

    x, y = blobs(args.n, args.d, args.k)
    xn, yn = x.numpy(), y.numpy()
    xn2 = xn.copy()
    print(machine())
    print(f"data: n={args.n}, d={args.d}, {args.k} clusters, float32; {args.repeats} repeats after a warm-up\n")

    out: dict[str, float] = {}
    with threadpool_limits(args.threads):
        sil = alternate([
            lambda: out.__setitem__("ours", float(silhouette_score(x, y))),
            lambda: out.__setitem__("sklearn", float(sk_silhouette(xn, yn))),
            lambda: x @ x.T,
            lambda: xn @ xn2.T,
        ], args.repeats)
        sil[2] = [min(a, b) for a, b in zip(sil[2], sil.pop(3))]  # the floor: the faster matmul
        res: dict[str, float] = {}

        def ours_km() -> None:
            res["ours"] = float(kmeans(x, args.k, n_init=args.n_init, seed=0).inertia)

        def sk_km() -> None:
            res["sklearn"] = float(KMeans(args.k, n_init=args.n_init, random_state=0, algorithm="lloyd").fit(xn).inertia_)

        km = alternate([ours_km, sk_km], args.kmeans_repeats)
    print_table(["measure", "repdiag s", "sklearn s", "floor s (x @ x.T)", "value repdiag", "value sklearn"], [
        ["silhouette", f"{median(sil[0]):.3f}", f"{median(sil[1]):.3f}", f"{median(sil[2]):.3f}",
         f"{out['ours']:.6f}", f"{out['sklearn']:.6f}"],
        [f"k-means (n_init={args.n_init})", f"{median(km[0]):.3f}", f"{median(km[1]):.3f}", "-",
         f"inertia {res['ours']:.1f}", f"inertia {res['sklearn']:.1f}"],
    ])
    speed = paired_ratio(sil[1], sil[0])
    floor = paired_ratio(sil[0], sil[2])
    km_speed = paired_ratio(km[1], km[0])
    rel = abs(res["ours"] - res["sklearn"]) / res["sklearn"]
    print()
    print(f"silhouette: {speed:.1f}x faster than sklearn (target >= 3x)  "
          f"[{'PASS' if speed >= 3 else 'MISSED'}]")
    print(f"silhouette: {floor:.2f}x the n x n x d matmul floor (target <= 1.25x)  "
          f"[{'PASS' if floor <= 1.25 else 'MISSED'}]")
    print(f"silhouette: |repdiag - sklearn| = {abs(out['ours'] - out['sklearn']):.2e}")
    print(f"k-means: {km_speed:.2f}x sklearn's speed (target >= 1x)  [{'PASS' if km_speed >= 1 else 'MISSED'}]; "
          f"inertia differs by {100 * rel:.3f}% (target <= 1%)  [{'PASS' if rel <= 0.01 else 'MISSED'}]")


if __name__ == "__main__":
    main()
