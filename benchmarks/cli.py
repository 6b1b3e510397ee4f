"""Wall time of the command line, as a user meets it: ``repdiag --help``, ``repdiag demo`` (3
seeds per arm, 6 trainings), ``repdiag report`` on the demo's 6 run directories and on two
digits checkpoints, each in a fresh subprocess.

Budgets (issues 6 and 11, 2-core CPU): ``--help`` under 0.3 s, ``report`` under 30 s, ``demo``
under 90 s. ``--help`` is timed side by side with a bare ``python -c pass`` (alternating repeats) so
the printed ratio separates repdiag's import cost from interpreter start-up. ``report`` and
``demo`` run with UMAP (the default embedding) on a warm numba cache, as every run after the
first; one extra ``report`` with an empty numba cache shows what the very first run costs.

    python benchmarks/cli.py [--help-repeats 11] [--report-repeats 3] [--demo-repeats 2] [--quick]

``--quick`` (a smoke run of the script itself) times one repeat of each, the demo with ``--quick``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import alternate, machine, median, paired_ratio, print_table  # noqa: E402

BIN = Path(sys.executable).parent / "repdiag"


def _cmd(*args: str) -> list[str]:
    return [str(BIN), *args] if BIN.exists() else [sys.executable, "-m", "repdiag", *args]


def _run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")


def _timed(cmd: list[str], repeats: int, env: dict[str, str] | None = None) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _run(cmd, env)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--help-repeats", type=int, default=11)
    ap.add_argument("--report-repeats", type=int, default=3)
    ap.add_argument("--demo-repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="one repeat each, demo --quick (checks the script)")
    args = ap.parse_args()
    if args.quick:
        args.help_repeats, args.report_repeats, args.demo_repeats = 3, 1, 1
    print(f"machine: {machine()}")
    work = Path(tempfile.mkdtemp(prefix="repdiag-bench-cli-"))
    rows = []

    bare, helped = alternate([lambda: _run([sys.executable, "-c", "pass"]), lambda: _run(_cmd("--help"))],
                             repeats=args.help_repeats, warmup=2)
    rows.append(["repdiag --help", f"{median(helped):.3f}", "0.3", f"{median(helped) / 0.3:.2f}",
                 f"python -c pass {median(bare):.3f} s; --help / bare {paired_ratio(helped, bare):.2f}x"])

    demo_out = work / "demo"
    demo = _timed(_cmd("demo", "--quiet", "--out", str(demo_out), *(["--quick"] if args.quick else [])),
                  args.demo_repeats)
    what = "2 epochs, PCA (--quick)" if args.quick else "12 epochs, probes, UMAP"
    rows.append(["repdiag demo", f"{median(demo):.1f}", "90", f"{median(demo) / 90:.2f}",
                 f"3 seeds x 2 arms, {what}, findings; runs {', '.join(f'{t:.1f}' for t in demo)} s"])

    run_dirs = sorted(str(p) for p in (demo_out / "runs").iterdir())
    runs_cmd = _cmd("report", *run_dirs, "--quiet", "--out", str(work / "report-runs"))
    runs = _timed(runs_cmd, args.report_repeats)
    rows.append(["repdiag report runs/* (6 run dirs)", f"{median(runs):.1f}", "30", f"{median(runs) / 30:.2f}",
                 f"6 final.pt on 1000 digits, curves from the logged rows, findings, UMAP of 3 layers x 2 runs (one per group); "
                 f"runs {', '.join(f'{t:.1f}' for t in runs)} s"])

    ckpts = [str(demo_out / "runs" / "bn-s0" / "final.pt"), str(demo_out / "runs" / "nobn-s0" / "final.pt")]
    report_cmd = _cmd("report", *ckpts, "--names", "bn,nobn", "--quiet", "--out", str(work / "report"))
    report = _timed(report_cmd, args.report_repeats)
    rows.append(["repdiag report bn.pt nobn.pt", f"{median(report):.1f}", "30", f"{median(report) / 30:.2f}",
                 f"1000 digits, default metrics, UMAP of 3 layers x 2 runs; runs {', '.join(f'{t:.1f}' for t in report)} s"])

    cold_env = dict(os.environ, NUMBA_CACHE_DIR=str(work / "empty-numba-cache"))
    cold = _timed(report_cmd, 1, env=cold_env)
    rows.append(["report, empty numba cache", f"{cold[0]:.1f}", "30", f"{cold[0] / 30:.2f}",
                 "the first run on a machine compiles UMAP's numba code once"])

    print()
    print_table(["command", "median s", "budget s", "ratio to budget", "notes"], rows)
    print(f"\n(outputs in {work})")


if __name__ == "__main__":
    main()
