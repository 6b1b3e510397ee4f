"""``repdiag metrics``: list the metric plugins."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``repdiag metrics``."""
    p.add_argument("--default", action="store_true", help="list only the metrics computed by default")


def run(args: argparse.Namespace) -> int:
    """Print one line per metric: name, what it needs, description."""
    from ..metrics import available_metrics

    metrics = available_metrics()
    rows = [m for m in metrics.values() if m.default or not args.default]
    width = max((len(m.name) for m in rows), default=10)
    for m in rows:
        needs = ",".join(sorted(m.needs)) or "-"
        mark = "*" if m.default else " "
        print(f"{m.name:<{width}} {mark} [{needs}] {m.description}")
    print(f"\n{len(rows)} metric(s); * = computed by default.")
    return 0
