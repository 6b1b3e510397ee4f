"""The inputs of ``repdiag report``: run directories (``attach(..., log_dir=...)``) and checkpoint
files, mixed, each with a run name, a group and a seed.

A run directory contributes the rows it logged during training (the over-training curves) and,
when it holds ``final.pt``, that checkpoint, evaluated like any other. ``--group NAME=GLOB``
assigns groups by path; otherwise a run directory's ``meta.json`` group is used, and a checkpoint
is a group of its own.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ..report import ReportData

__all__ = ["FINAL_CHECKPOINT", "Source", "compared_groups", "embedded_runs", "findings_input", "gather_sources",
           "parse_groups", "training_rows", "finish_report"]

FINAL_CHECKPOINT = "final.pt"
"""The checkpoint a run directory may hold (written with :func:`repdiag.save_checkpoint`)."""


@dataclass
class Source:
    """One positional input of ``repdiag report``.

    Attributes
    ----------
    arg : str
        The path as given.
    name : str
        The run name shown in the report.
    run_dir : Path or None
        The run directory, when ``arg`` is one.
    checkpoint : Path or None
        The checkpoint to evaluate: ``arg`` itself, or the run directory's ``final.pt``.
    group, seed : str or None, int or None
        The condition and seed of the run.
    """

    arg: str
    name: str
    run_dir: Path | None
    checkpoint: Path | None
    group: str | None
    seed: int | None


def parse_groups(specs: Sequence[str] | None) -> list[tuple[str, str]]:
    """``--group NAME=GLOB`` options as ``[(name, glob), ...]``, checked.

    >>> parse_groups(["bn=runs/bn-*", "nobn=runs/nobn-*"])
    [('bn', 'runs/bn-*'), ('nobn', 'runs/nobn-*')]
    """
    out = []
    for spec in specs or []:
        name, sep, pattern = spec.partition("=")
        if not sep or not name.strip() or not pattern.strip():
            raise ConfigError(f"--group must be NAME=GLOB, such as bn='runs/bn-*'; got {spec!r}.")
        out.append((name.strip(), pattern.strip()))
    return out


def _norm(path: str) -> str:
    return os.path.normpath(path)


def _group_of(arg: str, groups: Sequence[tuple[str, str]]) -> str | None:
    """The first ``--group`` whose glob matches ``arg`` (as given, or as an absolute path)."""
    forms = {_norm(arg), _norm(os.path.abspath(arg))}
    for name, pattern in groups:
        if any(fnmatch.fnmatchcase(f, _norm(pattern)) or fnmatch.fnmatchcase(f, _norm(os.path.abspath(pattern)))
               for f in forms):
            return name
    return None


def _unique(names: list[str]) -> list[str]:
    out: list[str] = []
    for stem in names:
        name, k = stem, 2
        while name in out:
            name, k = f"{stem}-{k}", k + 1
        out.append(name)
    return out


def gather_sources(paths: Sequence[str], names: str | None, groups: Sequence[str] | None) -> list[Source]:
    """Classify ``paths`` (run directories or checkpoint files), name them (``--names``, else
    the run directory's run name or the file stem, made unique) and give each its group and seed.

    Raises
    ------
    ConfigError
        For a path that is neither a file nor a run directory, a ``--group`` that matches no
        path, or ``--names`` of the wrong length.
    """
    from ..runs import is_run_dir, read_meta
    from ._hf import is_hf_dir

    specs = parse_groups(groups)
    found: list[tuple[str, Path | None, Path | None, dict[str, Any]]] = []
    for arg in paths:
        p = Path(arg)
        if p.is_dir() and not is_run_dir(p) and is_hf_dir(p):
            found.append((arg, None, p, {}))  # a save_pretrained directory: evaluated like a checkpoint
        elif p.is_dir():
            if not is_run_dir(p):
                raise ConfigError(f"each input must be a checkpoint file, a Hugging Face save_pretrained directory "
                                  f"(config.json) or a run directory (it holds meta.json, written by "
                                  f"repdiag.attach(..., log_dir=...)); {arg!r} is a directory without one. Pass the "
                                  "run directories themselves, e.g. runs/*.")
            final = p / FINAL_CHECKPOINT
            found.append((arg, p, final if final.is_file() else None, read_meta(p)))
        else:
            found.append((arg, None, p, {}))  # a missing file is reported by the checkpoint loader
    unused = [f"{n}={g}" for n, g in specs if not any(_group_of(arg, [(n, g)]) for arg, *_ in found)]
    if unused:
        raise ConfigError(f"--group {unused[0]} matches none of the inputs ({', '.join(paths)}). Quote the glob "
                          "and write it as the inputs are written, e.g. --group 'bn=runs/bn-*'.")
    if names:
        from ._cmd_report import run_names as named

        run_names = named(paths, names)  # checks count and distinctness
    else:
        run_names = _unique([str(meta.get("run") or Path(arg.rstrip("/\\")).name) if rd is not None
                             else (Path(arg).stem or Path(arg).name) if not Path(arg).is_dir()
                             else Path(arg.rstrip("/\\")).name for arg, rd, _, meta in found])
    out = []
    for (arg, rd, ck, meta), name in zip(found, run_names):
        seed = meta.get("seed")
        out.append(Source(arg, name, rd, ck, _group_of(arg, specs) or meta.get("group") or None,
                          int(seed) if isinstance(seed, int) else None))
    return out


def embedded_runs(sources: Sequence[Source]) -> list[str]:
    """The runs whose layers the report embeds: the first evaluated run of each group (seeds of
    one condition look alike in 2-D; one fit per layer and group keeps UMAP's cost flat).

    >>> embedded_runs([Source("a", "bn-s0", None, Path("a"), "bn", 0), Source("b", "bn-s1", None, Path("b"), "bn", 1),
    ...                Source("c", "x", None, Path("c"), None, None)])
    ['bn-s0', 'x']
    """
    firsts: dict[str, str] = {}
    for s in sources:
        if s.checkpoint is not None:
            firsts.setdefault(s.group or s.name, s.name)
    return list(firsts.values())


def training_rows(sources: Sequence[Source]) -> pd.DataFrame | None:
    """The rows the run directories logged during training, renamed to the report's run names
    and labelled with their groups (None when no input is a run directory)."""
    import pandas as pd

    from ..runs import load_run
    from ..tables import concat_tables

    frames = []
    for s in sources:
        if s.run_dir is None:
            continue
        t = load_run(s.run_dir)
        t["run"] = s.name
        t["group"] = pd.array([s.group or s.name] * len(t), dtype="string")
        frames.append(t)
    return concat_tables(frames) if frames else None


def finish_report(report: ReportData, sources: Sequence[Source]) -> ReportData:
    """Put every input in the report (run directories without a checkpoint too), in input
    order, with its group, seed and where it came from; label the evaluation table with them;
    and answer the source papers' questions (:func:`repdiag.findings`) for two groups."""
    import pandas as pd

    report.runs = [s.name for s in sources]
    report.groups = {s.name: s.group or s.name for s in sources}
    for s in sources:
        where = [str(s.run_dir)] if s.run_dir is not None else []
        if s.checkpoint is not None:
            where.append(str(s.checkpoint) + (" (evaluated)" if s.run_dir is not None else ""))
        report.sources[s.name] = " + ".join(where)
    seeds = {s.name: s.seed for s in sources}
    t = report.table
    t["group"] = pd.array([report.groups.get(r, r) for r in t["run"]], dtype="string")
    t["seed"] = pd.array([seeds.get(r) for r in t["run"]], dtype="Int64")
    report.findings, note = _findings(report)
    if note:
        report.notes.append(note)
    return report


def compared_groups(groups: Sequence[str]) -> tuple[str, str] | None:
    """The two groups the findings compare: ``bn`` and ``nobn`` when both exist, else the first
    two in input order (None with fewer than two).

    >>> compared_groups(["nobn", "x", "bn"]), compared_groups(["a", "b", "c"]), compared_groups(["a"])
    (('bn', 'nobn'), ('a', 'b'), None)
    """
    names = list(dict.fromkeys(groups))
    if "bn" in names and "nobn" in names:
        return "bn", "nobn"
    return (names[0], names[1]) if len(names) >= 2 else None


def findings_input(report: ReportData) -> pd.DataFrame:
    """Rows the findings rest on: each run's evaluation (its final checkpoint on the report's
    data) and, for metrics that evaluation lacks (landscape, covariate- and EM-shift probes, or
    every metric of a run without ``final.pt``), the rows it logged during training."""
    from ..tables import concat_tables

    t, tr = report.table, report.training
    if tr is None or tr.empty:
        return t
    have = set(zip(t["run"], t["metric"]))
    extra = tr[[(r, m) not in have for r, m in zip(tr["run"], tr["metric"])]]
    return concat_tables([t, extra])


def _findings(report: ReportData) -> tuple[pd.DataFrame | None, str]:
    from .. import findings
    from .._errors import RepdiagError

    members = report.members()
    pair = compared_groups(list(members))
    if pair is None:
        return None, ("All runs are in one group, so there are no findings (they compare two groups): pass "
                      "--group NAME=GLOB twice, or run directories with different groups.")
    try:
        frame = findings(findings_input(report), a=pair[0], b=pair[1])
    except RepdiagError as exc:
        return None, f"no findings: {exc}"
    rest = [g for g in members if g not in pair]
    note = f"The findings compare {pair[0]} with {pair[1]}; not compared: {', '.join(rest)}." if rest else ""
    return frame, note
