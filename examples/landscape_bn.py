"""Does BatchNorm make the loss landscape smoother, and does it reduce internal covariate shift?

Trains the SmallCNN (conv16-conv32-pool-conv32-pool-fc64-fc10, He initialisation, plain SGD)
with and without BN on the bundled 8x8 digits, several seeds each, with the landscape probes on
the recorder's schedule (``repdiag.attach(model, loss_fn=..., landscape_every=..., optimizer=opt)``):
every few steps, on the batch just trained on, the loss range and gradient change along the
gradient direction, the effective beta-smoothness, and Santurkar's covariate shift G vs G' per
layer (l2, cosine, relative). Prints the mean over training (and its spread over seeds), the
test accuracy, and saves the tidy table, a summary CSV and a plot over training.

Expected if the paper holds: with BN a smaller loss range, gradient change and beta (smoother),
while the covariate shift is *not* smaller. RESEARCH.md section 2 warns: with PyTorch's default
init the no-BN net barely trains and looks flat for a trivial reason, hence He init here, and
the relative variants (divided by the loss or the gradient norm) are printed beside the raw ones.

Source: Santurkar, Tsipras, Ilyas, Madry, NeurIPS 2018 (arXiv 1805.11604); see docs/landscape.md.

    python examples/landscape_bn.py [--seeds 3] [--epochs 10] [--every 20] [--out repdiag-out/landscape_bn]
    python examples/landscape_bn.py --quick      # 1 seed, 1 epoch on 512 digits: a smoke run
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
from repdiag.models import he_init, small_cnn
from repdiag.tables import concat_tables, write_table
from repdiag.training import accuracy, fit

NORMS = ("bn", "none")
LR = 0.05
SMOOTHNESS = ["loss_range", "loss_range_rel", "grad_change_max", "grad_change_rel_max", "beta_smoothness", "grad_norm"]
SHIFT = ["ics_l2", "ics_rel", "ics_cos"]


def run_one(norm: str, seed: int, *, epochs: int, every: int, step_sizes: list[float],
            train_size: int | None) -> tuple[pd.DataFrame, float]:
    """Train one net with the landscape probes attached; returns (table, test accuracy)."""
    xtr, ytr, xte, yte = digits_split(seed=0)
    if train_size is not None:
        xtr, ytr = xtr[:train_size], ytr[:train_size]
    torch.manual_seed(seed)
    model = he_init(small_cnn(norm), torch.Generator().manual_seed(seed))
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    rec = repdiag.attach(model, metrics=None, max_samples=1, run=f"{norm}/seed{seed}", loss_fn=nn.CrossEntropyLoss(),
                         landscape_every=every, optimizer=opt, landscape_options={"step_sizes": step_sizes})
    try:
        fit(model, xtr, ytr, epochs=epochs, batch_size=64, seed=seed, optimizer=opt, recorder=rec)
        table = rec.table()
    finally:
        rec.detach()
    return table, accuracy(model, xte, yte)


def per_step(table: pd.DataFrame) -> pd.DataFrame:
    """One value per (run, step, quantity): model-wide rows as they are, gradient change at the
    largest step size, covariate-shift rows averaged over the layers after the first."""
    t = table.assign(norm=table["run"].str.split("/").str[0])
    model_rows = t[t["layer"] == "(model)"]
    top = model_rows["step_size"] == model_rows["step_size"].max()
    grad = model_rows[top & model_rows["metric"].isin(["grad_change", "grad_change_rel"])]
    grad = grad.assign(metric=grad["metric"] + "_max")
    wide = model_rows[model_rows["metric"].isin(["loss_range", "loss_range_rel", "beta_smoothness", "grad_norm"])]
    ics = t[t["metric"].isin(SHIFT) & (t["depth"] > 0)]
    ics = ics.groupby(["norm", "run", "step", "metric"], observed=True)["value"].mean().reset_index()
    keep = ["norm", "run", "step", "metric", "value"]
    return pd.concat([wide[keep], grad[keep], ics[keep]], ignore_index=True)


def summarize(steps: pd.DataFrame) -> pd.DataFrame:
    """Mean over training per run, then mean and std over seeds, BN and no-BN side by side."""
    per_run = steps.groupby(["metric", "norm", "run"], observed=True)["value"].mean()
    g = per_run.groupby(["metric", "norm"], observed=True).agg(["mean", "std"]).unstack("norm")
    g.columns = [f"{norm} {stat}" for stat, norm in g.columns]
    order = [f"{n} {s}" for n in NORMS for s in ("mean", "std") if f"{n} {s}" in g.columns]
    return g.reindex([m for m in SMOOTHNESS + SHIFT if m in g.index])[order]


def ics_by_module(table: pd.DataFrame) -> pd.DataFrame:
    """Covariate shift by module type (conv, linear, BN), mean over layers, steps and seeds."""
    t = table[table["metric"].isin(SHIFT) & (table["depth"] > 0)]
    t = t.assign(norm=t["run"].str.split("/").str[0])
    return t.groupby(["metric", "module", "norm"], observed=True)["value"].mean().unstack("norm")


def plot(steps: pd.DataFrame, path: Path) -> None:
    """Each quantity over training, mean over seeds with the min-max band, BN vs no BN."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["loss_range", "grad_change_max", "beta_smoothness", "ics_l2", "ics_rel", "ics_cos"]
    fig, axes = plt.subplots(2, 3, figsize=(11, 6), squeeze=False)
    for ax, name in zip(axes.flat, names):
        part = steps[steps["metric"] == name]
        for norm in NORMS:
            v = part[part["norm"] == norm].groupby("step")["value"].agg(["mean", "min", "max"])
            if len(v):
                ax.plot(v.index, v["mean"], label=norm, marker=".")
                ax.fill_between(v.index, v["min"], v["max"], alpha=0.2)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        if name != "ics_cos":
            ax.set_yscale("log")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--every", type=int, default=20, help="probe period in steps")
    ap.add_argument("--out", type=Path, default=Path("repdiag-out/landscape_bn"))
    ap.add_argument("--quick", action="store_true", help="1 seed, 1 epoch on 512 digits, 4 step sizes (seconds)")
    args = ap.parse_args(argv)
    step_sizes = [0.05 * (i + 1) for i in range(8)]  # RESEARCH.md section 2: up to 0.4 x the gradient
    train_size = None
    if args.quick:
        args.seeds, args.epochs, args.every, train_size, step_sizes = 1, 1, 4, 512, [0.1, 0.2, 0.3, 0.4]
    torch.set_num_threads(min(2, torch.get_num_threads()))
    tables, accs = [], []
    for norm in NORMS:
        for seed in range(args.seeds):
            table, acc = run_one(norm, seed, epochs=args.epochs, every=args.every, step_sizes=step_sizes,
                                 train_size=train_size)
            tables.append(table)
            accs.append({"norm": norm, "seed": seed, "test_accuracy": acc})
            print(f"trained {norm:>4} seed {seed}: test accuracy {acc:.3f}")
    full = concat_tables(tables)
    steps = per_step(full)
    summary = summarize(steps)
    runs = pd.DataFrame(accs).groupby("norm", sort=False)["test_accuracy"].agg(["mean", "std"])
    pd.set_option("display.width", 200)
    pd.set_option("display.float_format", "{:.4f}".format)
    print(f"\ntest accuracy over {args.seeds} seed(s), {args.epochs} epoch(s), SGD lr {LR}:\n{runs}\n")
    print(f"mean over training (a probe every {args.every} steps; step sizes up to {max(step_sizes):g}):")
    print(summary.to_string())
    print(f"\ncovariate shift by module type (layers after the first):\n{ics_by_module(full).to_string()}")
    means = summary[[c for c in summary.columns if c.endswith("mean")]]
    if {"bn mean", "none mean"} <= set(means.columns):
        smoother = all(means.loc[m, "bn mean"] < means.loc[m, "none mean"]
                       for m in ("loss_range", "grad_change_max", "beta_smoothness") if m in means.index)
        ics_not_smaller = "ics_rel" in means.index and means.loc["ics_rel", "bn mean"] >= means.loc["ics_rel", "none mean"]
        print(f"\nsmoother with BN (loss range, gradient change, beta all smaller): {smoother}")
        print(f"relative covariate shift not smaller with BN: {ics_not_smaller}")
    args.out.mkdir(parents=True, exist_ok=True)
    write_table(full, args.out / "table.csv")
    summary.to_csv(args.out / "summary.csv")
    plot(steps, args.out / "landscape.png")
    print(f"\nwrote {args.out / 'table.csv'}, {args.out / 'summary.csv'}, {args.out / 'landscape.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
