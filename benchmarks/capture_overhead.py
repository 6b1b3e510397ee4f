"""Training-step time with and without ``repdiag.attach`` on a CIFAR-shaped CNN.

A 4-conv CNN (3x32x32 input, widths 32-64-128-128, BN), batch 128, SGD, 2 CPU threads (or the
GPU when present). One model, attached once; blocks of steps that record and blocks run inside
``rec.paused()`` (each hook returns after reading one bool: a few microseconds a step) alternate in
one process, so both arms share the same tensors and memory. A block is one period of the
schedule (``every`` steps, so it holds exactly one recorded step): with ``every=1`` the arms
alternate step by step, which keeps the pairs close in time; the machine's drift of +-5% between
blocks of ten steps had made 20 repeats of such blocks uncertain by about +-0.02 in the ratio.
The printed ratio is the median over repeats of (recording block time / paused block time).
Where the C kernel for the conv-map statistics is built, a third arm records with it switched off
(the PyTorch reductions, the path of installs without a compiler), so both ratios come from the
same run.

    python benchmarks/capture_overhead.py [--repeats 200] [--periods 1] [--every 1 10] [--batch 128]

Runs about 7 minutes on 2 CPU cores.

``--model transformer`` runs the same comparison on a small sequence encoder instead: two
``nn.TransformerEncoderLayer`` blocks (d_model 128, 4 heads, feed-forward 512, GELU module, so
``layers="auto"`` takes the two block activations), batch 32 of length 128, mean-pooled into a
10-class head:

    python benchmarks/capture_overhead.py --model transformer --batch 32 --repeats 100
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import alternate, kernel_status, machine, median, paired_ratio, print_table  # noqa: E402

import repdiag  # noqa: E402
from repdiag.capture import _native  # noqa: E402
from repdiag.models import cifar_cnn  # noqa: E402


class SmallEncoder(nn.Module):
    """The transformer arm: two encoder blocks with a GELU module, mean-pooled into 10 classes."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(128, 4, 512, dropout=0.1, activation=nn.GELU(), batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(x).mean(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=200,
                    help="repeats for every=1; every=k runs max(30, repeats // k)")
    ap.add_argument("--periods", type=int, default=1, help="schedule periods (of `every` steps) per timed block")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--model", choices=["cnn", "transformer"], default="cnn")
    ap.add_argument("--seq", type=int, default=128, help="sequence length of the transformer arm")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--every", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    if args.model == "cnn":
        base: nn.Module = cifar_cnn("bn").to(dev)
        x = torch.randn(args.batch, 3, 32, 32, device=dev)
        desc = f"cifar_cnn(bn), batch {args.batch}"
    else:
        base = SmallEncoder().to(dev)
        x = torch.randn(args.batch, args.seq, 128, device=dev)
        desc = f"2-block TransformerEncoder (d 128, ff 512), batch {args.batch} x length {args.seq}"
    loss_fn = nn.CrossEntropyLoss()
    y = torch.randint(0, 10, (args.batch,), device=dev)

    def block(model: nn.Module, opt: torch.optim.Optimizer, rec: repdiag.Recorder | None, steps: int) -> None:
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()
            if rec is not None:
                rec.step(labels=y)

    print(f"machine: {machine()}; device {dev}")
    print(kernel_status())
    print(f"model: {desc}, blocks of {args.periods} x every steps; one model attached "
          "(layers='auto', metrics='default'); recording and paused blocks alternate\n")
    rows = []
    for every in args.every:
        # One model for both arms, so that memory placement cannot favour either: the plain
        # blocks run inside rec.paused(), where each of the hooks returns after reading one bool.
        model = copy.deepcopy(base)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        rec = repdiag.attach(model, every=every, max_samples=4096)
        steps, repeats = every * args.periods, max(30, args.repeats // every)

        def plain() -> None:
            with rec.paused():
                block(model, opt, None, steps)

        def eager() -> None:
            with _native.use_native(False):
                block(model, opt, rec, steps)

        arms = [lambda: block(model, opt, rec, steps), plain]
        names = [f"every={every}"]
        if _native.enabled() and dev.type == "cpu":
            arms.append(eager)
            names.append(f"every={every}, eager reductions")
        times = alternate(arms, repeats, sync=sync)
        t_plain = times[1]
        for name, t in zip(names, times[:1] + times[2:]):
            rows.append((name, f"{steps} x {repeats}", f"{median(t_plain) / steps * 1e3:.1f}",
                         f"{median(t) / steps * 1e3:.1f}", f"{paired_ratio(t, t_plain):.3f}"))
        rec.detach()
    print_table(["schedule", "steps x repeats", "plain ms/step", "attached ms/step", "median ratio"], rows)


if __name__ == "__main__":
    main()
