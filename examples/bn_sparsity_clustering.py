"""Does BatchNorm make representations sparser, and do they cluster better by class?

Trains the SmallCNN (conv16-conv32-pool-conv32-pool-fc64-fc10) with and without BN on the
bundled 8x8 digits, several seeds each; then captures the post-ReLU representations of the
held-out test digits with ``repdiag.attach`` (model in eval mode) and prints, per layer, the
mean and spread over seeds of: element sparsity, channel sparsity (whole map zero), silhouette
and Davies–Bouldin of the class groups, k-means purity and NMI (k = 10), and nearest-class-centroid
accuracy. The tidy table of every run is saved as CSV beside a summary CSV.

Source: Potgieter, Mouton, Davel, arXiv 2501.14441 (see docs/metrics.md for the definitions).

    python examples/bn_sparsity_clustering.py [--seeds 3] [--epochs 20] [--out repdiag-out/bn_sparsity_clustering]
    python examples/bn_sparsity_clustering.py --quick      # 2 seeds, 2 epochs: a smoke run
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

import repdiag
from repdiag.data import digits_split
from repdiag.models import he_init, small_cnn
from repdiag.tables import concat_tables, write_table
from repdiag.training import accuracy, fit

METRICS = ["sparsity", "channel_sparsity_maps", "silhouette_labels", "davies_bouldin_labels", "kmeans_purity",
           "kmeans_nmi", "centroid_accuracy"]


def run_one(norm: str, seed: int, epochs: int) -> tuple[pd.DataFrame, float]:
    """Train one net, then measure the test digits' representations; returns (table, test accuracy)."""
    xtr, ytr, xte, yte = digits_split(seed=0)
    torch.manual_seed(seed)
    model = he_init(small_cnn(norm), torch.Generator().manual_seed(seed))
    fit(model, xtr, ytr, epochs=epochs, lr=0.01, momentum=0.9, batch_size=64, seed=seed)
    acc = accuracy(model, xte, yte)
    model.eval()
    with repdiag.attach(model, metrics=METRICS, run=f"{norm}/seed{seed}", max_samples=len(xte)) as rec:
        with torch.no_grad():
            model(xte)
        rec.step(labels=yte)
        table = rec.table()
    return table, acc


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Per (depth, layer, metric): mean and std over seeds for each norm, side by side."""
    t = table.assign(norm=table["run"].str.split("/").str[0])
    g = t.groupby(["depth", "layer", "metric", "norm"], observed=True)["value"].agg(["mean", "std"]).unstack("norm")
    g.columns = [f"{norm} {stat}" for stat, norm in g.columns]
    return g[sorted(g.columns, key=lambda c: (c.split()[0] != "none", c))]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("repdiag-out/bn_sparsity_clustering"))
    ap.add_argument("--quick", action="store_true", help="2 seeds, 2 epochs (under 30 s)")
    args = ap.parse_args(argv)
    seeds, epochs = (2, 2) if args.quick else (args.seeds, args.epochs)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    tables, accs = [], []
    for norm in ("none", "bn"):
        for seed in range(seeds):
            table, acc = run_one(norm, seed, epochs)
            tables.append(table)
            accs.append({"norm": norm, "seed": seed, "test_accuracy": acc})
            print(f"trained {norm:>4} seed {seed}: test accuracy {acc:.3f}")
    full = concat_tables(tables)
    summary = summarize(full)
    acc_frame = pd.DataFrame(accs).groupby("norm")["test_accuracy"].agg(["mean", "std"])
    pd.set_option("display.width", 160)
    pd.set_option("display.float_format", "{:.3f}".format)
    print(f"\ntest accuracy over {seeds} seed(s), {epochs} epoch(s):\n{acc_frame}\n")
    print(summary.to_string())
    args.out.mkdir(parents=True, exist_ok=True)
    write_table(full, args.out / "table.csv")
    summary.to_csv(args.out / "summary.csv")
    acc_frame.to_csv(args.out / "accuracy.csv")
    print(f"\nwrote {args.out / 'table.csv'}, {args.out / 'summary.csv'}, {args.out / 'accuracy.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
