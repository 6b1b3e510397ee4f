"""Training-step time with and without ``repdiag.attach`` on a CIFAR-shaped CNN.

A 4-conv CNN (3x32x32 input, widths 32-64-128-128, BN), batch 128, SGD, 2 CPU threads (or the
GPU when present). One model, attached once; blocks of steps that record and blocks run inside
``rec.paused()`` (each hook returns after reading one bool: a few microseconds a step) alternate in
one process, so both arms share the same tensors and memory. The printed ratio is the median over
repeats of (recording block time / paused block time).

    python benchmarks/capture_overhead.py [--repeats 15] [--steps 10] [--batch 128]
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import alternate, machine, median, paired_ratio, print_table  # noqa: E402

import repdiag  # noqa: E402
from repdiag.models import cifar_cnn  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--steps", type=int, default=10, help="training steps per timed block")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    base = cifar_cnn("bn").to(dev)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(args.batch, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (args.batch,), device=dev)

    def block(model: nn.Module, opt: torch.optim.Optimizer, rec: repdiag.Recorder | None) -> None:
        for _ in range(args.steps):
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()
            if rec is not None:
                rec.step(labels=y)

    print(f"machine: {machine()}; device {dev}")
    print(f"model: cifar_cnn(bn), batch {args.batch}, {args.steps} steps per block, {args.repeats} repeats; "
          "one model attached (layers='auto', metrics='default'); recording and paused blocks alternate\n")
    rows = []
    for every in (1, 10):
        # One model for both arms, so that memory placement cannot favour either: the plain
        # blocks run inside rec.paused(), where each of the hooks returns after reading one bool.
        model = copy.deepcopy(base)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        rec = repdiag.attach(model, every=every, max_samples=4096)

        def plain() -> None:
            with rec.paused():
                block(model, opt, None)

        t_hooked, t_plain = alternate([lambda: block(model, opt, rec), plain], args.repeats, sync=sync)
        ratio = paired_ratio(t_hooked, t_plain)
        rows.append((f"every={every}", f"{median(t_plain) / args.steps * 1e3:.1f}",
                     f"{median(t_hooked) / args.steps * 1e3:.1f}", f"{ratio:.3f}"))
        rec.detach()
    print_table(["schedule", "plain ms/step", "attached ms/step", "median ratio"], rows)


if __name__ == "__main__":
    main()
