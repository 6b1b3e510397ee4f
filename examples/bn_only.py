"""How much can BatchNorm's affine parameters do alone, and how many random features do they
switch off?

Trains the SmallCNN with BN (He-initialised conv/linear weights, gamma ~ U[0, 1] and beta = 0
as in the BN-only paper's code; SGD lr 0.1, momentum 0.9, weight decay 1e-4) on the bundled
8x8 digits in five set-ups, several seeds each:

- ``full``: every parameter trains;
- ``bn_only``: only gamma and beta train (``repdiag.bn.freeze_all_but_bn``);
- ``bn_output``: gamma, beta and the output layer;
- ``random``: the control, two randomly chosen weights per channel of every conv/linear layer
  (the same count as BN-only; ``repdiag.bn.freeze_all_but_random``);
- ``output_only``: the output layer alone.

Prints test accuracy, the fraction of channels with |gamma| < 0.05 beside the same fraction at
initialisation (``repdiag.bn.gamma_table(model, reference=init)``), and the fraction of channels
that are off (post-ReLU output zero on >= 99% of the test digits' entries, the ``channels_off``
metric). Saves the accuracy and gamma tables as CSV.

Expected if the paper holds: BN-only far above chance (10%) and above the random control, with
many more near-zero gammas and channels off than full training.

Source: Frankle, Schwab, Morcos, ICLR 2021 (arXiv 2003.00152); see docs/bn.md.

    python examples/bn_only.py [--seeds 2] [--epochs 30] [--width 32] [--out repdiag-out/bn_only]
    python examples/bn_only.py --quick      # 1 seed, 2 epochs, narrow net: a smoke run
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import torch
from torch import nn

import repdiag
from repdiag.bn import (
    TrainableSummary,
    freeze_all_but_bn,
    freeze_all_but_output,
    freeze_all_but_random,
    gamma_table,
    gamma_uniform_init,
    trainable_summary,
)
from repdiag.data import digits_split
from repdiag.models import he_init, small_cnn
from repdiag.tables import concat_tables, write_table
from repdiag.training import accuracy, fit

SETUPS: dict[str, Callable[[nn.Module, torch.Generator], TrainableSummary]] = {
    "full": lambda m, g: trainable_summary(m, "full"),
    "bn_only": lambda m, g: freeze_all_but_bn(m),
    "bn_output": lambda m, g: freeze_all_but_bn(m, train_output=True),
    "random": lambda m, g: freeze_all_but_random(m, per_channel=2, generator=g),
    "output_only": lambda m, g: freeze_all_but_output(m),
}
TAU = 0.05


def run_one(setup: str, seed: int, *, epochs: int, width: int, train_size: int | None
            ) -> tuple[dict[str, object], pd.DataFrame, pd.DataFrame]:
    """Train one set-up; returns (accuracy row, gamma table, channels_off table)."""
    xtr, ytr, xte, yte = digits_split(seed=0)
    if train_size is not None:
        xtr, ytr = xtr[:train_size], ytr[:train_size]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = gamma_uniform_init(he_init(small_cnn("bn", width=width), gen), gen)
    init = copy.deepcopy(model.state_dict())
    summary = SETUPS[setup](model, gen)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)
    fit(model, xtr, ytr, epochs=epochs, batch_size=64, seed=seed, optimizer=opt)
    acc = accuracy(model, xte, yte)
    run = f"{setup}/seed{seed}"
    gammas = gamma_table(model, thresholds=(0.001, 0.01, TAU, 0.1), reference=init).assign(run=run)
    model.eval()
    with repdiag.attach(model, metrics=["channels_off"], run=run, max_samples=1) as rec, torch.no_grad():
        model(xte)
        rec.step()
        off = rec.table()
    row = {"setup": setup, "seed": seed, "test_accuracy": acc, "trainable": summary.n_trainable,
           "trainable_fraction": summary.fraction}
    return row, gammas, off


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--out", type=Path, default=Path("repdiag-out/bn_only"))
    ap.add_argument("--quick", action="store_true", help="1 seed, 2 epochs, width 8 on 512 digits (seconds)")
    args = ap.parse_args(argv)
    train_size = None
    if args.quick:
        args.seeds, args.epochs, args.width, train_size = 1, 2, 8, 512
    torch.set_num_threads(min(2, torch.get_num_threads()))
    rows, gammas, offs = [], [], []
    for setup in SETUPS:
        for seed in range(args.seeds):
            row, g, off = run_one(setup, seed, epochs=args.epochs, width=args.width, train_size=train_size)
            rows.append(row)
            gammas.append(g)
            offs.append(off)
            print(f"trained {setup:>11} seed {seed}: test accuracy {row['test_accuracy']:.3f} "
                  f"({row['trainable']:,} trainable parameters)")
    runs = pd.DataFrame(rows)
    gamma = concat_tables(gammas)
    off = concat_tables(offs)
    gamma = gamma.assign(setup=gamma["run"].str.split("/").str[0])
    off = off.assign(setup=off["run"].str.split("/").str[0])
    below = gamma[gamma["metric"].isin(["gamma_below", "gamma_below_ref"]) & (gamma["threshold"] == TAU)]
    per_run = below.groupby(["setup", "run", "metric"], observed=True)["value"].mean().unstack("metric")
    per_run["channels_off"] = off[off["metric"] == "channels_off"].groupby("run")["value"].mean()
    per_run = per_run.reset_index().merge(runs.assign(run=runs["setup"] + "/seed" + runs["seed"].astype(str)),
                                          on=["setup", "run"])
    cols = ["test_accuracy", "gamma_below", "gamma_below_ref", "channels_off", "trainable"]
    summary = per_run.groupby("setup", sort=False)[cols].agg(["mean", "std"]).reindex(list(SETUPS))
    summary = summary.rename(columns={"gamma_below": f"|gamma|<{TAU}", "gamma_below_ref": f"|gamma|<{TAU} at init"})
    pd.set_option("display.width", 200)
    pd.set_option("display.float_format", "{:.4f}".format)
    print(f"\nover {args.seeds} seed(s), {args.epochs} epoch(s), SmallCNN width {args.width} "
          f"(channel fractions averaged over layers):\n{summary.to_string()}")
    acc = summary[("test_accuracy", "mean")]
    print(f"\nBN-only above chance (0.1): {bool(acc['bn_only'] > 0.1)}; above the random control: "
          f"{bool(acc['bn_only'] > acc['random'])}")
    g = summary[(f"|gamma|<{TAU}", "mean")]
    print(f"more near-zero gammas after BN-only than after full training: {bool(g['bn_only'] > g['full'])}")
    args.out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(args.out / "runs.csv", index=False)
    summary.to_csv(args.out / "summary.csv")
    write_table(gamma.drop(columns="setup"), args.out / "gamma_table.csv")
    write_table(off.drop(columns="setup"), args.out / "channels_off.csv")
    print(f"\nwrote {args.out / 'runs.csv'}, {args.out / 'summary.csv'}, {args.out / 'gamma_table.csv'}, "
          f"{args.out / 'channels_off.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
