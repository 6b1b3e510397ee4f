"""Cost of the landscape probes, in forward-backward passes of the same batch.

Claim (issue 5): ``gradient_predictiveness`` with k step sizes costs at most 1.15 x (k + 1)
plain forward-backward passes (``loss_fn(model(x), y).backward()``). Both are timed side by side
in one process, alternating, and the median of ``--repeats`` is compared. The covariate-shift
probe (one pass per parameter-owning module, plus two) is timed the same way for information.

    .venv/bin/python benchmarks/landscape.py [--repeats 7] [--k 8] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from repdiag.landscape import covariate_shift, gradient_predictiveness
from repdiag.models import cifar_cnn, he_init, small_cnn


def plain_passes(model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor, passes: int) -> None:
    for _ in range(passes):
        for p in model.parameters():
            p.grad = None
        loss_fn(model(x), y).backward()
    for p in model.parameters():
        p.grad = None


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int, repeats: int) -> list[str]:
    loss_fn = nn.CrossEntropyLoss()
    etas = [0.05 * (i + 1) for i in range(k)]
    owners = sum(1 for m in model.modules() if any(p.requires_grad for p in m.parameters(recurse=False)))
    cov_passes = owners + 2
    jobs = {
        "fb": lambda: plain_passes(model, loss_fn, x, y, k + 1),
        "probe": lambda: gradient_predictiveness(model, loss_fn, (x, y), step_sizes=etas),
        "fb_cov": lambda: plain_passes(model, loss_fn, x, y, cov_passes),
        "cov": lambda: covariate_shift(model, loss_fn, (x, y), lr=0.05),
    }
    for job in jobs.values():  # warm-up
        job()
    times: dict[str, list[float]] = {key: [] for key in jobs}
    for r in range(repeats):
        order = list(jobs) if r % 2 == 0 else list(reversed(jobs))
        for key in order:
            times[key].append(timed(jobs[key]))
    med = {key: statistics.median(v) for key, v in times.items()}
    ratio = med["probe"] / med["fb"]
    ratio_cov = med["cov"] / med["fb_cov"]
    return [
        f"{name:<22} {'predictiveness':<15} {k + 1:>6} {1e3 * med['fb'] / (k + 1):>10.2f} "
        f"{1e3 * med['probe']:>10.1f} {ratio:>7.3f} {'ok' if ratio <= 1.15 else 'OVER':>6}",
        f"{name:<22} {'covariate':<15} {cov_passes:>6} {1e3 * med['fb_cov'] / cov_passes:>10.2f} "
        f"{1e3 * med['cov']:>10.1f} {ratio_cov:>7.3f} {'(info)':>6}",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--k", type=int, default=8, help="step sizes of the predictiveness probe")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    cases = [
        ("small_cnn bn 8x8 b256", he_init(small_cnn(norm="bn")), torch.randn(256, 1, 8, 8, generator=g)),
        ("small_cnn none 8x8 b256", he_init(small_cnn(norm="none")), torch.randn(256, 1, 8, 8, generator=g)),
        ("cifar_cnn bn 32x32 b64", he_init(cifar_cnn(norm="bn")), torch.randn(64, 3, 32, 32, generator=g)),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), k = {args.k}, "
          f"median of {args.repeats} alternating repeats")
    print(f"{'model':<22} {'probe':<15} {'passes':>6} {'ms/pass':>10} {'probe ms':>10} {'ratio':>7} {'<=1.15':>6}")
    worst = 0.0
    for name, model, x in cases:
        y = torch.randint(0, 10, (x.shape[0],), generator=g)
        lines = bench(name, model, x, y, args.k, args.repeats)
        worst = max(worst, float(lines[0].split()[-2]))
        print("\n".join(lines))
    print(f"worst predictiveness ratio (probe time / (k + 1) plain forward-backward passes): {worst:.3f}")


if __name__ == "__main__":
    main()
