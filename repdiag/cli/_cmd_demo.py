"""``repdiag demo``: the embedded default. Trains the SmallCNN of RESEARCH.md with and without
BatchNorm on the bundled digits, recording with ``attach`` during training (values over steps,
plus the EM-shift and landscape probes), saves both checkpoints with
``repdiag.save_checkpoint``, loads them back and writes the side-by-side report."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ._cmd_report import add_common, finish, parse_metrics, pick_names

RUNS = (("bn", "bn"), ("nobn", "none"))  # (run name, small_cnn norm)
TRAINING_PLOTS = ("sparsity", "silhouette_labels", "channels_off", "loss", "loss_range_rel", "grad_change_rel",
                  "beta_smoothness", "ics_rel", "ics_cos", "w1_shift", "w1_shift_unit")
"""Metrics drawn over training steps with ``--training-plots auto`` (those the table holds)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``repdiag demo``."""
    p.add_argument("--epochs", type=int, default=12, help="training epochs per model (default: 12)")
    p.add_argument("--lr", type=float, default=0.02, help="SGD learning rate, momentum 0.9 (default: 0.02)")
    p.add_argument("--record-every", type=int, default=10, metavar="STEPS",
                   help="snapshot the metrics every STEPS training steps (default: 10)")
    p.add_argument("--probes", choices=("on", "off"), default="on",
                   help="EM-shift and landscape probes during training (default: on)")
    p.add_argument("--training-plots", default="auto", metavar="NAMES",
                   help="metrics drawn over training steps: 'auto' (a BN-relevant selection), 'all', or a comma list")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: at most 2 epochs and a PCA embedding instead of UMAP (seconds)")
    add_common(p, out_default="repdiag-out")


def _probe_options(x_probe: Any, loss_fn: Any, optimizer: Any, every: int, enabled: bool) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if not enabled:
        return opts
    opts.update(probe=x_probe, probe_every=every)  # EM shift of each layer on a fixed probe batch
    opts.update(loss_fn=loss_fn, landscape_every=every * 3, optimizer=optimizer)  # predictiveness, beta, G vs G'
    return opts


def run(args: argparse.Namespace) -> int:
    """Train, record, save, reload, evaluate, report."""
    import torch

    from .._errors import ConfigError

    for flag, value in (("--epochs", args.epochs), ("--record-every", args.record_every),
                        ("--embed-samples", args.embed_samples)):
        if value < 1:
            raise ConfigError(f"{flag} must be an integer >= 1; got {value}.")
    if not (args.lr > 0):
        raise ConfigError(f"--lr must be a positive number; got {args.lr}.")
    if args.quick:
        args.epochs = min(args.epochs, 2)
        if args.embedding == "umap":
            args.embedding = "pca"
    metrics = parse_metrics(args.metrics)
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and spinning threads hurt on a busy machine
    try:
        return _run(args, metrics, t0)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, metrics: str | list[str], t0: float) -> int:
    import warnings
    from pathlib import Path

    import torch
    from torch import nn

    from .._errors import RepdiagWarning
    from ..capture import attach
    from ..checkpoint import load_checkpoint, save_checkpoint
    from ..data import digits_split
    from ..models import he_init, small_cnn
    from ..tables import concat_tables
    from ..training import accuracy, fit
    from ._cmd_report import assemble, versions
    from ._data import DataSource
    from ._evaluate import evaluate, progress_bar

    xtr, ytr, xte, yte = digits_split(seed=args.seed)
    steps_per_epoch = (xtr.shape[0] + 63) // 64
    results, trained, notes = [], [], []
    out = Path(args.out)
    probes_on = args.probes == "on"
    for name, norm in RUNS:
        model = he_init(small_cnn(norm), torch.Generator().manual_seed(args.seed))
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
        extra = _probe_options(xte[:256], nn.CrossEntropyLoss(), opt, args.record_every, probes_on)
        rec = attach(model, every=1, snapshot_every=args.record_every, max_samples=512, metrics=metrics, run=name,
                     seed=args.seed, **extra)
        with progress_bar(args.epochs * steps_per_epoch, f"train {name}", args.quiet, "step") as bar:
            try:
                fit(model, xtr, ytr, epochs=args.epochs, optimizer=opt, seed=args.seed, recorder=rec, progress=bar)
            finally:
                rec.detach()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RepdiagWarning)  # early snapshots: skipped/undefined metrics are expected
            trained.append(rec.table())
        acc = accuracy(model, xte, yte)
        notes.append(f"{name}: small_cnn(norm={norm!r}), {args.epochs} epochs, test accuracy {acc:.3f}")
        save_checkpoint(model, out / f"{name}.pt", factory="repdiag.models:small_cnn", norm=norm)
    data = DataSource(xte, yte, "digits (held-out 25% of scikit-learn's 8x8 digits, standardised)")
    for name, _ in RUNS:
        model = load_checkpoint(out / f"{name}.pt")  # the safe path a stranger's checkpoint takes
        results.append(evaluate(model, data, name=name, metrics=metrics, quiet=args.quiet, seed=args.seed))
    meta = {"command": "repdiag " + " ".join(getattr(args, "argv", None) or sys.argv[1:]), "data": data.description,
            "training": "; ".join(notes),
            "probes during training": "EM shift, landscape" if probes_on else "none",
            **versions(("umap-learn",) if args.embedding == "umap" else ())}
    sources = {name: str(out / f"{name}.pt") for name, _ in RUNS}
    report = assemble(results, embedding=args.embedding, embed_layers=args.embed_layers,
                      embed_samples=args.embed_samples, seed=args.seed, quiet=args.quiet, meta=meta, sources=sources,
                      training=concat_tables(trained))
    report.training_metrics = _training_plots(args.training_plots, report.training)
    code = finish(report, str(out), args.quiet)
    print(f"demo finished in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return code


def _training_plots(spec: str, training: Any) -> list[str] | None:
    """Which training metrics to draw: ``auto``: :data:`TRAINING_PLOTS` present in the table
    (all when none is), ``all``, or the named ones."""
    have = set(training["metric"].dropna()) if training is not None else set()
    if spec == "all":
        return None
    if spec == "auto":
        picked = [m for m in TRAINING_PLOTS if m in have]
        return picked or None
    return pick_names(spec, "--training-plots", "be 'auto', 'all' or metrics recorded during training",
                      sorted(have), "Recorded")
