"""``repdiag report RUN_OR_CKPT [...]``: read run directories (the rows logged in training), load
checkpoints safely and run them over data through ``attach``, and write ``table.csv``,
``report.html`` and ``report.md`` with the runs (and groups of runs) side by side."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import ConfigError
from ._atomic import check_out_dir

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ..report import ReportData
    from ._evaluate import RunResult
    from ._progress import Progress

EMBED_CHOICES = ("umap", "pca", "none")
REDUCE_CHOICES = ("mean", "positions", "flatten")


def add_common(p: argparse.ArgumentParser, *, out_default: str) -> None:
    """Options shared by ``report`` and ``demo``."""
    p.add_argument("--out", default=out_default, metavar="DIR", help=f"output directory (default: {out_default})")
    p.add_argument("--metrics", default="default", metavar="NAMES",
                   help="comma-separated metric names, 'default' or 'all' (`repdiag metrics` lists them)")
    p.add_argument("--embedding", default="umap", choices=EMBED_CHOICES,
                   help="2-D embedding of layer samples for the scatter plots (default: umap; pca is instant)")
    p.add_argument("--embed-layers", default="auto", metavar="LAYERS",
                   help="comma-separated layers to embed (default: first, middle and last hooked layer)")
    p.add_argument("--embed-samples", type=int, default=1000, metavar="N",
                   help="samples per layer in the embedding (default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of sampling and embeddings (default: 0)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars and no terminal table")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``repdiag report``."""
    p.add_argument("checkpoints", nargs="+", metavar="RUN_OR_CKPT",
                   help="run directories (attach(..., log_dir=...); their final.pt is evaluated when present), Hugging Face "
                        "save_pretrained directories (config.json + weights; needs repdiag[hf]) and "
                        "checkpoint files: state dict (.pt/.pth, common wrappers), .safetensors, TorchScript")
    p.add_argument("--group", action="append", metavar="NAME=GLOB",
                   help="put the inputs whose path matches GLOB in group NAME (repeatable; quote the glob); "
                        "default: a run directory's own group, a checkpoint alone")
    p.add_argument("--model", action="append", metavar="SPEC",
                   help="architecture: package.module:factory or path/file.py:factory; once for all checkpoints "
                        "or once per checkpoint (not needed for checkpoints from repdiag.save_checkpoint)")
    p.add_argument("--model-kwargs", action="append", metavar="JSON",
                   help="keyword arguments of the factory as a JSON object; once, or once per --model")
    p.add_argument("--names", metavar="NAMES",
                   help="comma-separated run names, one per input (default: run names, checkpoint file names)")
    p.add_argument("--data", default="digits", metavar="SPEC",
                   help="'digits' (default), a .npz or .pt dict of inputs (x, or input_ids/attention_mask/...) and "
                        "labels (y or labels), or module:function returning a Dataset, DataLoader or (x, y)")
    p.add_argument("--samples", type=int, default=1000, metavar="N", help="samples to run (default: 1000)")
    p.add_argument("--batch-size", type=int, default=256, metavar="N", help="batch size (default: 256)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--layers", default="auto", metavar="LAYERS",
                   help="comma-separated module paths or globs to hook (default: auto = activation modules)")
    p.add_argument("--reduce", default="mean", choices=REDUCE_CHOICES,
                   help="how a conv map or token sequence becomes rows (attach's reduce; default: mean)")
    p.add_argument("--capture", default="output", choices=("output", "input"),
                   help="record each hooked module's output (default) or its input")
    p.add_argument("--feature-dim", default="auto", metavar="DIM",
                   help="axis of the units in the hooked outputs, e.g. -1 for (batch, tokens, features) "
                        "(default: auto, attach's layout inference)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow pickled objects (runs code from the file!) and factories the checkpoint names")
    add_common(p, out_default="repdiag-report")


def _positive(value: int, flag: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{flag} must be an integer >= 1; got {value!r}.")
    return value


def comma_names(spec: str) -> list[str]:
    """The stripped, non-empty items of a comma-separated option."""
    return [s.strip() for s in spec.split(",") if s.strip()]


def pick_names(spec: str, flag: str, expected: str, allowed: Sequence[str], label: str) -> list[str]:
    """The items of ``spec``, each one of ``allowed``; else one :class:`ConfigError` naming the
    offenders and listing ``allowed`` after ``label``."""
    names = comma_names(spec)
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise ConfigError(f"{flag} must {expected}; {', '.join(map(repr, bad)) or 'none given'} is not one. "
                          f"{label}: {', '.join(allowed)}.")
    return names


def parse_metrics(spec: str) -> str | list[str]:
    """``--metrics``: 'default', 'all' or a comma list, each name checked against the registry."""
    from ..metrics import get_metric

    spec = spec.strip()
    if spec in ("default", "all"):
        return spec
    names = comma_names(spec)
    if not names:
        raise ConfigError("--metrics must name at least one metric, or 'default' / 'all'; got an empty list.")
    for n in names:
        get_metric(n)  # unknown names raise with the closest ones
    return names


def parse_layers(spec: str) -> str | list[str]:
    """``--layers``: 'auto' or a comma list of paths/globs."""
    spec = spec.strip()
    if spec == "auto":
        return spec
    names = comma_names(spec)
    if not names:
        raise ConfigError("--layers must be 'auto' or comma-separated module paths; got an empty list.")
    return names


def capture_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--reduce``, ``--capture`` and ``--feature-dim`` as ``attach`` keywords."""
    out: dict[str, Any] = {"reduce": args.reduce, "capture": args.capture}
    text = str(args.feature_dim).strip()
    if text != "auto":
        try:
            out["feature_dim"] = int(text)
        except ValueError:
            raise ConfigError(f"--feature-dim must be 'auto' or an integer axis such as -1 or 1; got {text!r}.") from None
    return out


def _kwargs(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--model-kwargs must be a JSON object such as '{{\"norm\": \"bn\"}}'; got {text!r} "
                          f"({exc.msg}).") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"--model-kwargs must be a JSON object (a dict); got {type(value).__name__} {text!r}.")
    return value


def _per_checkpoint(values: list[str] | None, n: int, flag: str) -> list[str | None]:
    if not values:
        return [None] * n
    if len(values) == 1:
        return [values[0]] * n
    if len(values) != n:
        raise ConfigError(f"{flag} must be given once (for all checkpoints) or once per checkpoint ({n}); "
                          f"got {len(values)}.")
    return [v for v in values]


def run_names(paths: Sequence[str], names: str | None) -> list[str]:
    """Run names: ``--names`` or the file stems (made unique)."""
    if names:
        out = [s.strip() for s in names.split(",")]
        if len(out) != len(paths) or not all(out):
            raise ConfigError(f"--names must hold one non-empty name per checkpoint ({len(paths)}); got {names!r}.")
        if len(set(out)) != len(out):
            raise ConfigError(f"--names must be distinct; got {names!r}.")
        return out
    out = []
    for p in paths:
        stem = Path(p).stem or Path(p).name
        name, k = stem, 2
        while name in out:
            name, k = f"{stem}-{k}", k + 1
        out.append(name)
    return out


def versions(extra: Sequence[str] = ()) -> dict[str, str]:
    """Versions of Python and the packages that shaped the numbers."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "platform": platform.platform(terse=True)}
    for pkg in ("repdiag", "torch", "numpy", "pandas", "scikit-learn", "matplotlib", *extra):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def choose_embed_layers(spec: str, hooked: Sequence[str]) -> list[str]:
    """``auto``: first, middle and last hooked layer; else the named (matched) layers, checked."""
    if spec.strip() == "auto":
        picks = [hooked[0], hooked[len(hooked) // 2], hooked[-1]] if hooked else []
        return list(dict.fromkeys(picks))
    return pick_names(spec, "--embed-layers", "name hooked layers", hooked, "Hooked")


def assemble(results: Sequence[RunResult], *, embedding: str, embed_layers: str, embed_samples: int, seed: int,
             quiet: bool, meta: dict[str, str], sources: dict[str, str],
             training: pd.DataFrame | None = None, embed_runs: Sequence[str] | None = None,
             bar: Progress | None = None, umap_warm: bool | None = None) -> ReportData:
    """Match layers, embed the chosen layers' samples (each (run, layer) once, in parallel where
    :func:`repdiag.report.embed_workers` allows), and gather a :class:`ReportData`.

    ``bar``: a :class:`Progress` to advance (the demo's one bar), else tqdm bars of its own;
    ``umap_warm``: whether the numba cache was warm when ``bar`` reserved the UMAP warm-up.
    """
    import torch

    from ..report import ReportData, match_tables
    from ..tables import concat_tables

    runs = [r.name for r in results]
    match = match_tables([r.table for r in results] + ([training] if training is not None else []))
    table = concat_tables([r.table for r in results])
    notes = [w for r in results for w in r.warnings]
    data = ReportData(runs, table, match, training=training, sources=sources, meta=meta, notes=notes,
                      embed_method=embedding)
    hooked = [lay for lay in match.order if any(match.renames.get(r.name, {}).get(x, x) == lay
                                                for r in results for x in r.layers)]
    if embedding != "none":
        data.embed_layers = choose_embed_layers(embed_layers, hooked)
        todo = [(r, orig) for r in results for orig in r.layers
                if match.renames.get(r.name, {}).get(orig, orig) in data.embed_layers
                and (embed_runs is None or r.name in embed_runs)]
        g = torch.Generator().manual_seed(seed)
        keys, xs, ys = [], [], []
        for r, orig in todo:  # the samples first, in order: the same subsets however the fits run
            x, y = r.samples[orig]
            if x.shape[0] > embed_samples:
                idx = torch.randperm(x.shape[0], generator=g)[:embed_samples]
                x, y = x[idx], y[idx]
            keys.append((r.name, match.renames.get(r.name, {}).get(orig, orig)))
            xs.append(x)
            ys.append(y.numpy())
        desc = f"{embedding} of {len({k[0] for k in keys})} runs x {len(data.embed_layers)} layers"
        fitted = embed_all(xs, embedding, seed=seed, quiet=quiet, desc=desc, bar=bar, umap_warm=umap_warm)
        data.embeddings = {k: (xy, y) for k, xy, y in zip(keys, fitted, ys)}
    data.gammas = {r.name: {match.renames.get(r.name, {}).get(k, k): v for k, v in r.gammas.items()}
                   for r in results if r.gammas}
    return data


def embed_all(xs: Sequence[Any], embedding: str, *, seed: int, quiet: bool, desc: str, bar: Progress | None = None,
              umap_warm: bool | None = None) -> list[Any]:
    """Every embedding of a report, with honest progress: UMAP's first use (numba compiling or
    loading its code) is a phase of its own, timed apart from the fits, which then cost about the
    same each; the fits run through :func:`repdiag.report.embed_many`."""
    from ..report import embed_many, embed_workers, umap_cache_warm, warm_up_umap
    from ._progress import embed_weight, progress_bar, umap_load_text, umap_load_weight

    if embedding == "umap" and xs:
        warm = umap_cache_warm() if umap_warm is None else umap_warm
        if bar is not None:
            bar.phase(umap_load_text(warm))
            warm_up_umap()
            bar.advance(umap_load_weight(warm))
        else:
            with progress_bar(None, umap_load_text(warm), quiet, eta=False):
                warm_up_umap()
    workers = embed_workers(len(xs))
    if bar is not None:
        bar.phase(desc)
        step = embed_weight(len(xs)) if embedding == "umap" else 0.0
        return embed_many(xs, embedding, seed=seed, workers=workers, done=lambda i: bar.advance(step))
    with progress_bar(len(xs), desc, quiet, "fit") as fits:
        return embed_many(xs, embedding, seed=seed, workers=workers, done=lambda i: fits.update(1))


def print_summary(data: ReportData, paths: dict[str, Path], quiet: bool) -> None:
    """The compact side-by-side tables on stdout (a column per group; metrics only some groups
    have in their own table), then where the files are."""
    from ..report import format_value, group_summary

    for caption, frame in (group_summary(data) if not quiet else []):
        full = len(frame)
        frame = frame.drop_duplicates(["metric", "layer"])  # compact: the first setting of each metric
        if not (frame["setting"] != "").any():
            frame = frame.drop(columns="setting")
        shown = frame.copy()
        for g in [c for c in frame.columns if c not in ("metric", "layer", "setting")]:
            shown[g] = shown[g].map(format_value)
        with __import__("pandas").option_context("display.max_rows", 400, "display.width", 160,
                                                 "display.max_colwidth", 28):
            print(f"{caption}:\n{shown.to_string(index=False)}\n")
        if len(frame) < full:
            print(f"({full - len(frame)} more rows with other settings in report.html and table.csv)")
    if not quiet:
        if data.match.note:
            print(f"\nnote: {data.match.note}")
    print(f"report: {paths['html']}\ntable:  {paths['table']}\nmarkdown: {paths['markdown']}")


def _load_all(args: argparse.Namespace, paths: list[str]) -> list[Any]:
    """Load every checkpoint: ``save_pretrained`` directories through transformers (``--model``
    does not apply to them: their config names the architecture), the rest with
    :func:`repdiag.checkpoint.load_checkpoint`, ``--model`` given once or once per such file."""
    from ..checkpoint import load_checkpoint
    from ._hf import is_hf_dir, load_hf

    hf = [is_hf_dir(p) for p in paths]
    files = [p for p, h in zip(paths, hf) if not h]
    specs = iter(_per_checkpoint(args.model, len(files), "--model"))
    kw_texts = iter(_per_checkpoint(args.model_kwargs, len(files), "--model-kwargs"))
    if args.model_kwargs and not args.model:
        raise ConfigError("--model-kwargs needs --model (the factory it is passed to).")
    models = []
    for path, h in zip(paths, hf):
        if h:
            models.append(load_hf(path, trust=args.trust_checkpoint))
            continue
        spec, kw = next(specs), next(kw_texts)
        kwargs = _kwargs(kw) if kw is not None else None
        models.append(load_checkpoint(path, factory=spec, model_kwargs=kwargs, trust=args.trust_checkpoint))
    return models


def run(args: argparse.Namespace) -> int:
    """Load, evaluate, match, embed, plot, write."""
    check_out_dir(args.out)  # an unusable --out fails now, not after the evaluation
    _positive(args.samples, "--samples")
    _positive(args.batch_size, "--batch-size")
    _positive(args.embed_samples, "--embed-samples")
    metrics = parse_metrics(args.metrics)
    layers = parse_layers(args.layers)
    capture = capture_options(args)
    from ._data import check_seed, load_data

    check_seed(args.seed)
    from ._evaluate import check_device, evaluate
    from ._runs import embedded_runs, finish_report, gather_sources, training_rows

    device = check_device(args.device)
    inputs = gather_sources(args.checkpoints, args.names, args.group)
    evaluated = [s for s in inputs if s.checkpoint is not None]
    models = _load_all(args, [str(s.checkpoint) for s in evaluated])
    data = load_data(args.data, samples=args.samples, seed=args.seed)
    results = [evaluate(m, data, name=s.name, layers=layers, metrics=metrics, batch_size=args.batch_size,
                        device=device, quiet=args.quiet, seed=args.seed, capture_options=capture)
               for m, s in zip(models, evaluated)]
    meta = {"command": "repdiag " + " ".join(getattr(args, "argv", None) or sys.argv[1:]), "data": data.description,
            **versions(("umap-learn",) if args.embedding == "umap" else ()),
            **({"transformers": versions(("transformers",))["transformers"]}
               if any(type(m).__module__.startswith("transformers") for m in models) else {})}
    report = assemble(results, embedding=args.embedding, embed_layers=args.embed_layers,
                      embed_samples=args.embed_samples, seed=args.seed, quiet=args.quiet, meta=meta, sources={},
                      training=training_rows(inputs), embed_runs=embedded_runs(inputs))
    return finish(finish_report(report, inputs), args.out, args.quiet)


def finish(report: ReportData, out: str, quiet: bool, bar: Progress | None = None, reserved: float = 0.0) -> int:
    """Write the report files and print the summary (``bar``: a ``Progress`` to advance, which
    counted ``reserved`` units for the figures and the files at its start)."""
    from ..report import write_report
    from ._atomic import atomic_dir
    from ._progress import W_WRITE, plot_progress

    for note in report.notes:
        print(f"warning: {note}", file=sys.stderr)
    try:
        with atomic_dir(out) as tmp:  # --out holds the old report or the new one, never a mix
            written = write_report(report, tmp, **plot_progress(report, bar, reserved))
        paths = {kind: Path(out) / p.relative_to(tmp) for kind, p in written.items()}
        if bar is not None:
            bar.advance(W_WRITE)  # the progress of the last figure names "write report.html" (plot_progress)
    except OSError as exc:
        raise ConfigError(f"cannot write the report to --out {out!r}: {exc.strerror or exc}. Choose a writable "
                          "directory.") from exc
    print_summary(report, paths, quiet)
    return 0
