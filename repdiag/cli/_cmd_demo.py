"""``repdiag demo``: the embedded default. Trains the SmallCNN of RESEARCH.md with and without
BatchNorm on the bundled digits, several seeds per arm, recording with ``attach`` into one run
directory per run (values over steps, plus the EM-shift and landscape probes) and saving each
model there as ``final.pt`` with ``repdiag.save_checkpoint``; then writes the report from those
run directories, exactly as ``repdiag report OUT/runs/*`` would."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ._atomic import check_out_dir
from ._cmd_report import add_common, finish, parse_metrics, pick_names

RUNS = (("bn", "bn"), ("nobn", "none"))  # (group name, small_cnn norm)
TRAINING_PLOTS = ("sparsity", "silhouette_labels", "channels_off", "loss", "loss_range", "loss_range_rel",
                  "grad_change", "grad_change_rel", "beta_smoothness", "ics_l2", "ics_rel", "ics_cos", "w1_shift",
                  "w1_shift_unit")
"""Metrics drawn over training steps with ``--training-plots auto`` (those the table holds)."""

def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``repdiag demo``."""
    p.add_argument("--seeds", type=int, default=3, help="runs (seeds) per arm, BN and no BN (default: 3)")
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

    for flag, value in (("--seeds", args.seeds), ("--epochs", args.epochs), ("--record-every", args.record_every),
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
    check_out_dir(args.out)  # an existing file or an unwritable path: refused before any training
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and spinning threads hurt on a busy machine
    try:
        return _run(args, metrics, t0)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, metrics: str | list[str], t0: float) -> int:
    import shutil
    import warnings
    from pathlib import Path

    import torch
    from torch import nn

    from .._errors import ConfigError, RepdiagWarning
    from ..capture import attach
    from ..checkpoint import save_checkpoint
    from ..data import digits_split
    from ..models import he_init, small_cnn
    from ..runs import is_run_dir
    from ..training import accuracy, fit
    from ..report import umap_cache_warm
    from ._progress import (PLOT_GUESS, W_EVAL, W_FINDINGS, W_PLOT, W_ROWS, W_WRITE, Progress, embed_weight,
                            umap_load_weight)

    xtr, ytr, xte, yte = digits_split(seed=args.seed)
    steps = args.epochs * ((xtr.shape[0] + 63) // 64)
    out = Path(args.out)
    runs = [(f"{group}-s{k}", group, norm, args.seed + k) for group, norm in RUNS for k in range(args.seeds)]
    dirs = [out / "runs" / name for name, *_ in runs]
    for d in dirs:  # a previous demo's run of the same name is replaced; anything else is left alone
        if d.exists() and not is_run_dir(d):
            raise ConfigError(f"--out {str(out)!r} holds {str(d)!r}, which is not a run directory of a previous demo; "
                              "choose another --out.")
    fits = _EMBED_GUESS * len(RUNS) if args.embedding == "umap" else 0  # corrected once the layers are known
    umap_warm = umap_cache_warm() if args.embedding == "umap" else True  # the first UMAP use: compile or load
    bar = Progress(len(runs) * (steps + W_EVAL) + W_ROWS + fits * embed_weight(fits) + W_FINDINGS
                   + PLOT_GUESS * W_PLOT + W_WRITE + (umap_load_weight(umap_warm) if args.embedding == "umap" else 0.0),
                   args.quiet)
    notes = []
    probes_on = args.probes == "on"
    for i, ((name, group, norm, seed), run_dir) in enumerate(zip(runs, dirs)):
        bar.phase(f"train {name} ({i + 1}/{len(runs)})")
        if run_dir.exists():
            shutil.rmtree(run_dir)
        model = he_init(small_cnn(norm), torch.Generator().manual_seed(seed))
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
        extra = _probe_options(xte[:256], nn.CrossEntropyLoss(), opt, args.record_every, probes_on)
        rec = attach(model, every=1, snapshot_every=args.record_every, max_samples=512, metrics=metrics, run=name,
                     group=group, seed=seed, log_dir=run_dir, **extra)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RepdiagWarning)  # early snapshots: skipped/undefined metrics are expected
            try:
                fit(model, xtr, ytr, epochs=args.epochs, optimizer=opt, seed=seed, recorder=rec, progress=bar)
            finally:
                rec.detach()
        notes.append(f"{name}: small_cnn(norm={norm!r}), seed {seed}, test accuracy {accuracy(model, xte, yte):.3f}")
        save_checkpoint(model, run_dir / "final.pt", factory="repdiag.models:small_cnn", norm=norm)
    code = _report(args, metrics, [str(d) for d in dirs], (xte, yte), notes, bar, umap_warm)
    bar.close(f"done in {time.perf_counter() - t0:.0f} s")
    return code


def _report(args: argparse.Namespace, metrics: str | list[str], dirs: list[str], test: tuple[Any, Any],
            notes: list[str], bar: Any, umap_warm: bool) -> int:
    """The report from the run directories ``dirs``: what ``repdiag report DIRS`` does, with the
    demo's held-out digits and one progress bar."""
    from .._errors import ConfigError
    from ..checkpoint import load_checkpoint
    from ._cmd_report import assemble, choose_embed_layers, versions
    from ._data import DataSource
    from ._evaluate import evaluate
    from ._progress import PLOT_GUESS, W_EVAL, W_FINDINGS, W_PLOT, W_ROWS, W_WRITE, embed_weight
    from ._runs import embedded_runs, finish_report, gather_sources, training_rows

    data = DataSource(test[0], test[1], "digits (held-out 25% of scikit-learn's 8x8 digits, standardised)")
    inputs = gather_sources(dirs, None, None)
    results = []
    for s in inputs:
        if s.checkpoint is None:  # every demo run saved final.pt; a missing one is a bug, loudly
            raise ConfigError(f"run directory {s.arg!r} lacks final.pt.")
        bar.phase(f"measure {s.name} (final.pt)")
        model = load_checkpoint(s.checkpoint)  # the safe path a stranger's checkpoint takes
        results.append(evaluate(model, data, name=s.name, metrics=metrics, quiet=True, seed=args.seed))
        bar.advance(W_EVAL)
    meta = {"command": "repdiag " + " ".join(getattr(args, "argv", None) or sys.argv[1:]), "data": data.description,
            "training": f"{args.epochs} epochs, SGD lr {args.lr} momentum 0.9; " + "; ".join(notes),
            "probes during training": "EM shift, landscape" if args.probes == "on" else "none",
            **versions(("umap-learn",) if args.embedding == "umap" else ())}
    firsts = embedded_runs(inputs)
    bar.phase("read the runs' logged rows")
    training = training_rows(inputs)
    bar.advance(W_ROWS)
    if args.embedding == "umap":  # the reserve of _run, corrected to the fits there are
        fits = len(choose_embed_layers(args.embed_layers, results[0].layers)) * len(firsts)
        guess = _EMBED_GUESS * len(RUNS)
        bar.grow(fits * embed_weight(fits) - guess * embed_weight(guess))
    report = assemble(results, embedding=args.embedding, embed_layers=args.embed_layers,
                      embed_samples=args.embed_samples, seed=args.seed, quiet=True, meta=meta, sources={},
                      training=training, embed_runs=firsts, bar=bar, umap_warm=umap_warm)
    bar.phase("findings (bootstrap over seeds)")
    report = finish_report(report, inputs)
    bar.advance(W_FINDINGS)
    report.training_metrics = _training_plots(args.training_plots, report.training)
    return finish(report, args.out, args.quiet, bar=bar, reserved=PLOT_GUESS * W_PLOT + W_WRITE)


_EMBED_GUESS = 3  # layers embedded by default (first, middle, last)


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
