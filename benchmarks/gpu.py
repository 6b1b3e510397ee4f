"""The GPU checks of issue 13 in one script (under 5 minutes on a GPU): capture overhead, table()
time, blocked silhouette against its matmul floor, and the CUDA-only tests.

1. Capture overhead, training-step time attached / paused (one model, arms alternating step by
   step, median of paired ratios), ``every=1`` and ``every=10``: the CIFAR-shaped CNN of
   ``benchmarks/capture_overhead.py`` (``cifar_cnn("bn")``, batch 128) and a small transformer
   encoder (``nn.TransformerEncoder``, 4 layers, d=256, 8 heads, 128 tokens, batch 32; the four
   encoder layers hooked).
2. ``rec.table()`` with the default metrics on ``benchmarks/table.py``'s MLP at 5 layers x 4,096
   rows x 256 units and 20 layers x 16,384 rows x 64 units (median of the repeats).
3. ``silhouette_score`` at n = 100,000, d = 512 (distance blocks of at most 4,096 rows) against
   the floor: the same ``n x n x d`` product ``x @ x.T`` formed in blocks of the same rows.
4. ``pytest -k cuda tests/`` (the tests parametrised over the CUDA device, and the sync-debug
   tests: no sync in the hooked forward, ``tests/test_capture.py``; ``table()``'s syncs do not
   grow with the number of layers, ``tests/test_host_syncs.py``), when the device is CUDA.

``--device cpu`` is a smoke mode: small sizes, a few repeats, under a minute; it checks the script
runs, its figures mean nothing.

    python benchmarks/gpu.py                 # on a machine with a GPU
    python benchmarks/gpu.py --device cpu    # smoke mode
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import alternate, machine, median, paired_ratio, print_table  # noqa: E402
from table import make_model  # noqa: E402

import repdiag  # noqa: E402
from repdiag.functional import silhouette_score  # noqa: E402
from repdiag.models import cifar_cnn  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _sync(dev: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)


def capture_ratios(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, layers: object,
                   loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], repeats: int,
                   dev: torch.device, labelled: bool = True, smoke: bool = False) -> list[list[str]]:
    """Rows ``[model, schedule, plain ms/step, attached ms/step, ratio]`` for every=1 and every=10
    (``labelled``: ``rec.step(labels=y)``, else ``rec.step()``, as for token rows)."""
    rows = []
    for every in (1, 10):
        m = copy.deepcopy(model)
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        rec = repdiag.attach(m, layers=layers, every=every, max_samples=4096)

        def block(record: bool, m: nn.Module = m, opt: torch.optim.Optimizer = opt,
                  rec: repdiag.Recorder = rec, every: int = every) -> None:
            for _ in range(every):
                opt.zero_grad(set_to_none=True)
                loss(m(x), y).backward()
                opt.step()
                if record:
                    rec.step(labels=y if labelled else None)

        def plain(rec: repdiag.Recorder = rec, block: Callable[[bool], None] = block) -> None:
            with rec.paused():
                block(False)

        times = alternate([lambda block=block: block(True), plain], max(1 if smoke else 3, repeats // every),
                          sync=_sync(dev), warmup=0 if smoke else 1)
        rows.append([name, f"every={every}", f"{median(times[1]) / every * 1e3:.1f}",
                     f"{median(times[0]) / every * 1e3:.1f}", f"{paired_ratio(times[0], times[1]):.3f}"])
        rec.detach()
    return rows


class Encoder(nn.Module):
    """Token embedding, a TransformerEncoder and a classifier on the mean token."""

    def __init__(self, vocab: int, d: int, heads: int, layers: int, classes: int = 10) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.emb(tokens)).mean(dim=1))


def table_time(layers: int, rows: int, width: int, repeats: int, dev: torch.device) -> tuple[float, int]:
    """Median seconds of ``rec.table()`` (default metrics) on the MLP with full buffers, and the
    number of rows table() returned."""
    torch.manual_seed(0)
    model = make_model(layers, width).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    rec = repdiag.attach(model, layers=[str(2 * i + 1) for i in range(layers)], max_samples=rows, run="gpu")
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(10, 64, generator=g) * 1.5
    batch = 512
    for _ in range(-(-rows // batch) + 2):
        y = torch.randint(0, 10, (batch,), generator=g)
        x = (centres[y] + torch.randn(batch, 64, generator=g)).to(dev)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y.to(dev)).backward()
        opt.step()
        rec.step(labels=y)
    out: list[int] = []

    def call() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out.append(len(rec.table()))

    t = alternate([call], repeats, sync=_sync(dev))[0]
    rec.detach()
    return median(t), out[-1]


def silhouette_vs_floor(n: int, d: int, repeats: int, dev: torch.device) -> tuple[float, float, float]:
    """Median seconds of silhouette_score (blocks of <= 4096 rows) and of the blocked x @ x.T floor,
    and the median paired ratio."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (n,), generator=g)
    x = (torch.randn(10, d, generator=g)[y] * 0.5 + torch.randn(n, d, generator=g) * 0.3).to(dev)
    y = y.to(dev)
    block = 4096

    def floor() -> None:
        for i in range(0, n, block):
            x[i:i + block] @ x.T

    t = alternate([lambda: silhouette_score(x, y, block=block), floor], repeats, sync=_sync(dev))
    return median(t[0]), median(t[1]), paired_ratio(t[0], t[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=None, help="capture repeats for every=1 (default 100; smoke 4)")
    ap.add_argument("--skip-tests", action="store_true", help="do not run the CUDA tests")
    args = ap.parse_args()
    dev = torch.device(args.device)
    smoke = dev.type == "cpu"
    if dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py: --device cuda asked, but torch sees no CUDA device; use --device cpu for the smoke mode")
    t_start = time.perf_counter()
    print(f"machine: {machine()}; device {dev}" + ("  [SMOKE MODE: small sizes, figures meaningless]" if smoke else ""))
    repeats = args.repeats or (2 if smoke else 100)

    # 1. capture overhead
    torch.manual_seed(0)
    batch = 8 if smoke else 128
    cnn = cifar_cnn("bn").to(dev)
    x = torch.randn(batch, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    rows = capture_ratios("cifar_cnn(bn)", cnn, x, y, "auto", nn.functional.cross_entropy, repeats, dev,
                          smoke=smoke)
    d, seq, tb = (64, 16, 4) if smoke else (256, 128, 32)
    enc = Encoder(1000, d, 8, 4).to(dev)
    tokens = torch.randint(0, 1000, (tb, seq), device=dev)
    yt = torch.randint(0, 10, (tb,), device=dev)
    rows += capture_ratios("transformer encoder", enc, tokens, yt, [f"encoder.layers.{i}" for i in range(4)],
                           nn.functional.cross_entropy, repeats, dev, labelled=False, smoke=smoke)
    print("\ncapture overhead (attached / paused, median of paired ratios):")
    print_table(["model", "schedule", "plain ms/step", "attached ms/step", "ratio"], rows)

    print(f"({time.perf_counter() - t_start:.0f} s)")

    # 2. table()
    cases = [(2, 512, 64), (3, 1024, 32)] if smoke else [(5, 4096, 256), (20, 16384, 64)]
    trows = []
    for layers, n, width in cases:
        t, nrows = table_time(layers, n, width, 2 if smoke else 3, dev)
        trows.append([f"{layers} layers x {n} rows x {width}", f"{t:.3f}", str(nrows)])
    print("\nrec.table(), default metrics (median):")
    print_table(["case", "seconds", "table rows"], trows)

    print(f"({time.perf_counter() - t_start:.0f} s)")

    # 3. silhouette vs floor
    n, dd = (3000, 64) if smoke else (100_000, 512)
    ts, tf, ratio = silhouette_vs_floor(n, dd, 2 if smoke else 3, dev)
    print(f"\nsilhouette n={n}, d={dd}: {ts:.3f} s; blocked x @ x.T floor {tf:.3f} s; "
          f"{ratio:.2f}x the floor (target <= 1.25x) [{'PASS' if ratio <= 1.25 else 'MISSED'}]")

    # 4. CUDA-only tests
    if dev.type == "cuda" and not args.skip_tests:
        print("\nCUDA tests: pytest -q -k cuda tests/")
        rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-k", "cuda", "tests/"], cwd=ROOT)
        print(f"CUDA tests: {'PASS' if rc == 0 else f'FAILED (exit {rc})'}")
    else:
        print("\nCUDA tests: not run (" + ("--skip-tests" if args.skip_tests else "device is not CUDA") + ")")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
