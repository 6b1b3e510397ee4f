"""``rec.table()`` with the default metrics against scikit-learn doing the same measurements on the
same buffers, side by side in one process.

Model: an MLP of ``--layers`` blocks ``Linear(width) + ReLU`` on 10 Gaussian classes in 64
dimensions, trained with SGD; ``repdiag.attach(model, layers=<the ReLUs>, max_samples=4096)``
with the default metrics and ``rec.step(labels=y)``. scikit-learn's side, per layer, on the
recorder's buffered rows and labels: ``silhouette_score``, ``davies_bouldin_score``,
``calinski_harabasz_score``, ``KMeans(k, n_init=3, random_state=0)`` scored with
``normalized_mutual_info_score`` and purity (from ``contingency_matrix``), and ``NearestCentroid``
on repdiag's own held-out split. (table() computes the streaming-statistics rows besides; they
have no scikit-learn counterpart and are counted in its time.)

Two cases: the *first* table() of a recorder (k-means seeded by k-means++ from scratch, as
scikit-learn; the recorder's k-means memory is cleared before each repeat), and a *later* one,
after ``--more`` further training steps (k-means warm-started from the previous table()'s
centres; scikit-learn again from scratch). Calls alternate after an untimed warm-up round; ratios
are medians of the per-repeat ratios.

    python benchmarks/table.py [--layers 5] [--width 256] [--repeats 3] [--steps 300] [--more 100]
    python benchmarks/table.py --layers 20 --width 64
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import alternate, machine, median, paired_ratio, print_table  # noqa: E402

import repdiag  # noqa: E402
from repdiag.functional import stratified_split  # noqa: E402


def make_model(layers: int, width: int, d_in: int = 64, classes: int = 10) -> nn.Sequential:
    mods: list[nn.Module] = []
    d = d_in
    for _ in range(layers):
        mods += [nn.Linear(d, width), nn.ReLU()]
        d = width
    return nn.Sequential(*mods, nn.Linear(d, classes))


def sklearn_measures(rec: repdiag.Recorder, dtype: type = np.float32) -> dict[tuple[str, str], float]:
    """The same measurements as table()'s clustering rows, by scikit-learn, on the same buffers
    (``dtype=np.float64``: on float64 copies, the reference the float32 figures are read against)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import (
        calinski_harabasz_score,
        davies_bouldin_score,
        normalized_mutual_info_score,
        silhouette_score,
    )
    from sklearn.metrics.cluster import contingency_matrix
    from sklearn.neighbors import NearestCentroid

    out: dict[tuple[str, str], float] = {}
    for name in rec.layers:
        xt, yt = rec.samples(name)
        keep = yt >= 0
        x, y = xt[keep].numpy().astype(dtype), yt[keep].numpy()
        out[(name, "silhouette_labels")] = silhouette_score(x, y)
        out[(name, "davies_bouldin_labels")] = davies_bouldin_score(x, y)
        out[(name, "calinski_harabasz_labels")] = calinski_harabasz_score(x, y)
        km = KMeans(len(np.unique(y)), n_init=3, random_state=0, algorithm="lloyd").fit(x).labels_
        out[(name, "kmeans_nmi")] = normalized_mutual_info_score(y, km)
        c = contingency_matrix(km, y)
        out[(name, "kmeans_purity")] = c.max(axis=1).sum() / c.sum()
        tr, te = (i.numpy() for i in stratified_split(torch.from_numpy(y), 0.25, seed=0))
        out[(name, "centroid_accuracy")] = NearestCentroid().fit(x[tr], y[tr]).score(x[te], y[te])
    return out


def ours(rec: repdiag.Recorder) -> dict[tuple[str, str], float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = rec.table()
    t = t[t["step"] == rec.step_count]
    return {(r.layer, r.metric): float(r.value) for r in t.itertuples()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--rows", type=int, default=4096, help="max_samples (buffered rows per layer)")
    ap.add_argument("--steps", type=int, default=300, help="training steps before the first table()")
    ap.add_argument("--more", type=int, default=100, help="training steps before each later table()")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits

    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = make_model(args.layers, args.width).to(dev)
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(10, 64, generator=g) * 1.5
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    relus = [str(2 * i + 1) for i in range(args.layers)]
    rec = repdiag.attach(model, layers=relus, max_samples=args.rows, run="bench")

    def train(steps: int) -> None:
        for _ in range(steps):
            y = torch.randint(0, 10, (args.batch,), generator=g)
            x = (centres[y] + torch.randn(args.batch, 64, generator=g)).to(dev)
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y.to(dev)).backward()
            opt.step()
            rec.step(labels=y)

    train(args.steps)
    print(machine())
    print(f"{args.layers} layers x {args.rows} rows x {args.width} units, 10 classes; {args.repeats} repeats "
          f"after a warm-up\n")
    vals: dict[str, dict[tuple[str, str], float]] = {}

    def first() -> None:
        rec.__dict__.pop("_plan_memory", None)  # a recorder's first table(): no k-means memory
        vals["ours"] = ours(rec)

    def theirs(key: str = "sk") -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NearestCentroid on dead units: zero within-class spread
            vals[key] = sklearn_measures(rec)

    with threadpool_limits(args.threads):
        t_first = alternate([first, theirs], args.repeats)
        later: list[list[float]] = [[], []]
        ours(rec)  # the memory the later calls start from
        for r in range(args.repeats):
            train(args.more)
            order = [0, 1] if r % 2 == 0 else [1, 0]
            for i in order:
                t0 = time.perf_counter()
                (lambda: vals.__setitem__("ours_later", ours(rec)), lambda: theirs("sk_later"))[i]()
                later[i].append(time.perf_counter() - t0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec.__dict__.pop("_plan_memory", None)
        vals["ours"], vals["sk"], vals["sk64"] = ours(rec), sklearn_measures(rec), sklearn_measures(rec, np.float64)

    def diff(a: str, b: str, m: str) -> float:
        return max(abs(vals[a][(lay, m)] - vals[b][(lay, m)]) for lay in relus)

    diffs = {m: (diff("ours", "sk", m), diff("ours", "sk64", m), diff("sk", "sk64", m)) for _, m in vals["sk"]}
    print_table(["call", "table() s", "sklearn s", "ratio", "target"], [
        ["first table()", f"{median(t_first[0]):.3f}", f"{median(t_first[1]):.3f}",
         f"{paired_ratio(t_first[0], t_first[1]):.3f}", "<= 0.5"],
        [f"after {args.more} more steps", f"{median(later[0]):.3f}", f"{median(later[1]):.3f}",
         f"{paired_ratio(later[0], later[1]):.3f}", "<= 0.3"],
    ])
    print("\nlargest difference over layers, on the buffers after the timed calls (k-means figures come from "
          "different seedings):")
    print_table(["metric", "table() - sklearn", "table() - sklearn float64", "sklearn - sklearn float64"],
                [[m, *(f"{v:.2e}" for v in dv)] for m, dv in diffs.items()])
    rec.detach()


if __name__ == "__main__":
    main()
