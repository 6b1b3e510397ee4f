"""Progress on stderr: a tqdm bar for one loop (:func:`progress_bar`) and one weighted bar across
the phases of a long command (:class:`Progress`).

The estimates are meant to be honest: a step whose cost is unlike the rest (numba compiling or
loading UMAP's code on first use, seconds to a minute) is its own phase, shown with its elapsed
time and no remaining time, so the rate of the steps that follow is not extrapolated from it; the
weighted bar averages its rate over the whole run (no smoothing that lets one quick or slow phase
swing the estimate), and it never moves backwards.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["Progress", "W_EMBED", "W_EVAL", "W_FINDINGS", "W_PLOT", "W_UMAP_COLD", "W_ROWS", "W_UMAP_WARM", "W_WRITE",
           "embed_weight", "plot_progress", "progress_bar", "umap_load_text", "umap_load_weight"]

W_EVAL, W_ROWS, W_EMBED, W_FINDINGS, W_PLOT, W_WRITE = 10.0, 90.0, 25.0, 130.0, 5.0, 10.0
W_UMAP_WARM, W_UMAP_COLD = 50.0, 1000.0
"""Weights of :class:`Progress` in training steps of the demo's SmallCNN (the unit, ~0.03 s on a
2-core CPU), from the demo's own phases (``repdiag demo`` on a shared 2-core AMD EPYC, 2026-12-03):
measuring one run over the held-out digits (~0.3 s), reading the six run directories' logged
rows (~3 s), one UMAP fit of ~450 samples (~0.7 s), the findings' bootstraps (~4.5 s), drawing
one figure (~0.15 s), writing the files; UMAP's first use in a process with numba's cache warm
(import and a warm-up fit, ~1-3 s) and cold (compiling it: ~34 s, the first run on a machine)."""

PLOT_GUESS = 45
"""Figures a demo report draws (reserved at the start, corrected once they are planned)."""


def progress_bar(total: int | None, desc: str, quiet: bool, unit: str = "it", *, eta: bool = True) -> Any:
    """A tqdm bar on stderr (disabled when ``quiet``). ``eta=False``: a step of unknown length,
    shown by its description and elapsed time only."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=quiet, file=sys.stderr, leave=False, dynamic_ncols=True,
                smoothing=0.0, bar_format=None if eta else "{desc} ({elapsed})")


def umap_load_text(warm: bool) -> str:
    """The phase name of the UMAP warm-up (:func:`repdiag.report.warm_up_umap`)."""
    return "load umap (numba cache)" if warm else "compile umap (first use, ~1 min; cached after)"


def umap_load_weight(warm: bool) -> float:
    """Weight of the UMAP warm-up with the numba cache warm or cold."""
    return W_UMAP_WARM if warm else W_UMAP_COLD


def embed_weight(n_fits: int) -> float:
    """Weight of one of ``n_fits`` UMAP fits, as many at once as :func:`repdiag.report.embed_workers`
    allows (their total: ``n_fits * embed_weight(n_fits)``)."""
    from ..report import embed_workers

    return W_EMBED / embed_workers(n_fits)


def _bar_class() -> Any:
    """tqdm with an ``{eta}`` field for ``bar_format``, set by its owner (tqdm's own
    ``{remaining}`` extrapolates from the very first update)."""
    from tqdm.auto import tqdm

    class _Bar(tqdm):
        eta = "?"

        @property
        def format_dict(self) -> dict[str, Any]:
            return {**super().format_dict, "eta": self.eta}

    return _Bar


class Progress:
    """One tqdm bar across the phases of a long command (``repdiag demo``): each phase names
    itself in the description and advances by its weight, so the bar moves with the time spent
    and ends exactly full. The remaining time is the work left at the average rate since the
    first advance ("?" before).
    Work found later (the figures, once planned) corrects the total with :meth:`grow` before it
    starts. Disabled (no output) when ``quiet``."""

    def __init__(self, total: float, quiet: bool) -> None:
        self.bar = _bar_class()(total=total, desc="repdiag", disable=quiet, file=sys.stderr, leave=True,
                                dynamic_ncols=True, bar_format="{desc:<40.40} {percentage:3.0f}%|{bar}| {elapsed}<{eta}")
        self._start: tuple[float, float] | None = None  # (elapsed, units) when the first advance ended
        self._rate: float | None = None  # seconds per unit since then

    def _estimate(self, n: float) -> None:
        """The remaining time at the rate since the first advance ended (``n`` units done now):
        the first step of a process (imports, first calls, allocations) is not extrapolated; "?"
        until a rate is known."""
        if self.bar.disable:
            return
        elapsed = float(self.bar.format_dict["elapsed"])
        if self._start is None:
            self._start = (elapsed, n)
        elif n > self._start[1] and elapsed > self._start[0]:
            self._rate = (elapsed - self._start[0]) / (n - self._start[1])
        if self._rate is not None:
            self.bar.eta = self.bar.format_interval(max(0.0, self.bar.total - n) * self._rate)

    def phase(self, desc: str) -> None:
        """Name what runs now."""
        self.bar.set_description_str(desc, refresh=True)

    def advance(self, units: float = 1.0) -> None:
        """Count ``units`` of work as done."""
        self._estimate(self.bar.n + units)
        self.bar.update(units)

    def update(self, units: float = 1.0) -> None:
        """tqdm's name for :meth:`advance` (so a :class:`Progress` can stand in for a bar)."""
        self.advance(units)

    def grow(self, units: float) -> None:
        """Add ``units`` of work not known when the bar started (negative: less than reserved;
        never below what is done)."""
        self.bar.total = max(self.bar.total + units, self.bar.n)
        if self._rate is not None and not self.bar.disable:
            self.bar.eta = self.bar.format_interval(max(0.0, self.bar.total - self.bar.n) * self._rate)
        self.bar.refresh()

    def close(self, desc: str = "done") -> None:
        """Finish, described by ``desc`` (the bar stays on screen; it is full when every phase
        advanced by what it announced)."""
        self.phase(desc)
        self.bar.close()

    @property
    def n(self) -> float:
        """Units done so far."""
        return float(self.bar.n)

    @property
    def total(self) -> float:
        """Units in all (so far)."""
        return float(self.bar.total)

    def text(self) -> str:
        """The bar as the terminal shows it now."""
        return str(self.bar.format_meter(**self.bar.format_dict))


def plot_progress(report: Any, bar: Progress | None, reserved: float = 0.0) -> dict[str, Any]:
    """``write_report`` keywords that advance ``bar`` per figure (none when ``bar`` is None):
    the figures are planned first, so the bar's total is corrected to exactly what is left (the
    figures, then writing the files: advance by :data:`W_WRITE` once written), less the
    ``reserved`` units counted for them at the start."""
    if bar is None:
        return {}
    from ..report import plan_figures

    plan = plan_figures(report)
    bar.grow(W_PLOT * len(plan) + W_WRITE - reserved)

    last = plan[-1].title if plan else ""

    def progress(title: str) -> None:
        bar.phase(f"plot {title}")
        bar.advance(W_PLOT)
        if title == last:  # drawn next, then the files are written
            bar.phase("last plot; write report.html")

    return {"plan": plan, "progress": progress}
