"""How far does each layer's output distribution move per update: no norm, BN, unitized BN?

Trains an MLP (4 hidden layers of 128, He init, SGD) on the bundled 8x8 digits with no
normalisation, with BatchNorm, and with unitized BatchNorm (alpha fixed at 1, and alpha
trainable from the paper's initial value 0), several seeds each. A fixed probe batch of held-out
digits is passed through the net every few steps (``repdiag.attach(..., probe=x)``; the model,
its BN running statistics and the RNG are left as they were) and each normalisation layer's
outputs are compared with the previous probe pass: exact W1 (EM distance), the same-input
coupling bound, the first-moment bound, sliced and mean per-unit W1, raw and divided by the mean
output norm (``scale`` column). Prints the mean over training per variant and layer, and saves
the tidy table, a summary CSV and a plot of EM shift over training.

Source: Huang & Yu, CVPR 2020 (arXiv 2001.02814); see docs/transport.md.

    python examples/em_shift_unitization.py [--seeds 3] [--epochs 10] [--probe-every 5] [--out repdiag-out/em_shift]
    python examples/em_shift_unitization.py --quick      # 2 seeds, 1 epoch, small nets: a smoke run
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from torch import nn

import repdiag
from repdiag.data import digits_split
from repdiag.models import he_init, mlp
from repdiag.nn import UnitizedBatchNorm1d
from repdiag.tables import concat_tables, write_table
from repdiag.training import accuracy, fit

VARIANTS = {  # name -> (norm, alpha value or None for the default 0, alpha trainable)
    "none": ("none", None, False),
    "bn": ("bn", None, False),
    "unitized_fixed1": ("unitized", 1.0, False),
    "unitized_learned": ("unitized", None, True),
}
SHIFT = "w1_shift"  # exact W1 between the probe outputs of consecutive probe passes


def build(variant: str, seed: int, depth: int, width: int) -> nn.Sequential:
    norm, alpha, learn = VARIANTS[variant]
    torch.manual_seed(seed)
    model = he_init(mlp(norm, depth=depth, width=width), torch.Generator().manual_seed(seed))
    for m in model.modules():
        if isinstance(m, UnitizedBatchNorm1d):
            if alpha is not None:
                with torch.no_grad():
                    m.alpha.fill_(alpha)
            m.alpha.requires_grad_(learn)
    return model


def norm_layers(depth: int) -> list[str]:
    """Paths of the normalisation slot of each hidden layer (Flatten, then Linear-norm-ReLU blocks);
    an ``Identity`` without normalisation, so every variant is measured at the same place."""
    return [str(2 + 3 * i) for i in range(depth)]


def run_one(variant: str, seed: int, *, epochs: int, depth: int, width: int, probe_size: int, probe_every: int,
            train_size: int | None) -> tuple[pd.DataFrame, float, float]:
    """Train one net with the probe attached; returns (table, test accuracy, mean alpha)."""
    xtr, ytr, xte, yte = digits_split(seed=0)
    if train_size is not None:
        xtr, ytr = xtr[:train_size], ytr[:train_size]
    model = build(variant, seed, depth, width)
    rec = repdiag.attach(model, layers=norm_layers(depth), metrics=None, run=f"{variant}/seed{seed}", max_samples=1,
                         probe=xte[:probe_size], probe_every=probe_every)
    try:
        fit(model, xtr, ytr, epochs=epochs, lr=0.02, momentum=0.9, batch_size=64, seed=seed, recorder=rec)
        table = rec.table()
    finally:
        rec.detach()
    alphas = [float(m.alpha.detach().mean()) for m in model.modules() if isinstance(m, UnitizedBatchNorm1d)]
    return table, accuracy(model, xte, yte), sum(alphas) / len(alphas) if alphas else float("nan")


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Per (metric, scale, depth): mean over probe steps and seeds for each variant, side by side."""
    t = table.assign(variant=table["run"].str.split("/").str[0])
    per_seed = t.groupby(["metric", "scale", "depth", "variant", "run"], observed=True)["value"].mean()
    g = per_seed.groupby(["metric", "scale", "depth", "variant"], observed=True).agg(["mean", "std"]).unstack("variant")
    g.columns = [f"{v} {stat}" for stat, v in g.columns]
    order = [f"{v} {s}" for v in VARIANTS for s in ("mean", "std") if f"{v} {s}" in g.columns]
    return g[order]


def plot(table: pd.DataFrame, path: Path) -> None:
    """EM shift (exact W1) over training: raw (top) and scale-normalised (bottom), one column per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = table[table["metric"] == SHIFT].assign(variant=table["run"].str.split("/").str[0])
    depths = sorted(t["depth"].unique())
    fig, axes = plt.subplots(2, len(depths), figsize=(3.2 * len(depths), 5.5), squeeze=False, sharex=True)
    for row, scale in enumerate(("raw", "normalized")):
        for col, depth in enumerate(depths):
            ax = axes[row][col]
            part = t[(t["scale"] == scale) & (t["depth"] == depth)]
            for variant in VARIANTS:
                v = part[part["variant"] == variant].groupby("step")["value"].agg(["mean", "min", "max"])
                if len(v):
                    ax.plot(v.index, v["mean"], label=variant)
                    ax.fill_between(v.index, v["min"], v["max"], alpha=0.2)
            ax.set_yscale("log")
            ax.set_title(f"layer {depth} ({scale})", fontsize=9)
            if row == 1:
                ax.set_xlabel("step")
    axes[0][0].set_ylabel("W1 shift")
    axes[1][0].set_ylabel("W1 shift / mean output norm")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--probe-size", type=int, default=256)
    ap.add_argument("--probe-every", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("repdiag-out/em_shift"))
    ap.add_argument("--quick", action="store_true", help="2 seeds, 1 epoch on 512 digits, 2 x 32 MLP (seconds)")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.depth, args.width, args.probe_size = 2, 1, 2, 32, 64
    train_size = 512 if args.quick else None
    torch.set_num_threads(min(2, torch.get_num_threads()))
    tables, info = [], []
    for variant in VARIANTS:
        for seed in range(args.seeds):
            table, acc, alpha = run_one(variant, seed, epochs=args.epochs, depth=args.depth, width=args.width,
                                        probe_size=args.probe_size, probe_every=args.probe_every,
                                        train_size=train_size)
            tables.append(table)
            info.append({"variant": variant, "seed": seed, "test_accuracy": acc, "mean_alpha": alpha})
            print(f"trained {variant:>16} seed {seed}: test accuracy {acc:.3f}"
                  + (f", mean alpha {alpha:.3f}" if alpha == alpha else ""))
    full = concat_tables(tables)
    summary = summarize(full)
    runs = pd.DataFrame(info).groupby("variant", sort=False)[["test_accuracy", "mean_alpha"]].agg(["mean", "std"])
    pd.set_option("display.width", 200)
    pd.set_option("display.float_format", "{:.4f}".format)
    print(f"\nover {args.seeds} seed(s), {args.epochs} epoch(s):\n{runs}\n")
    print(f"EM shift per {args.probe_every} steps on {args.probe_size} probe digits, mean over training:")
    print(summary.loc[[SHIFT, "w1_shift_upper", "w1_shift_lower"]].to_string())
    args.out.mkdir(parents=True, exist_ok=True)
    write_table(full, args.out / "table.csv")
    summary.to_csv(args.out / "summary.csv")
    runs.to_csv(args.out / "runs.csv")
    plot(full, args.out / "em_shift.png")
    print(f"\nwrote {args.out / 'table.csv'}, {args.out / 'summary.csv'}, {args.out / 'runs.csv'}, "
          f"{args.out / 'em_shift.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
