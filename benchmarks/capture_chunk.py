"""Time of the hook's streaming statistics through the one-pass C kernel and through the eager
reductions at several CPU chunk sizes (``_stats.CPU_CHUNK``), and of the ways eager PyTorch can
count zeros per map.

The four activations the capture benchmark records each step (``cifar_cnn``'s ReLUs at batch
128: 128x32x32x32, 128x64x32x32, 128x128x16x16, 128x128x8x8, float32, post-ReLU) go through
``StreamingStats.update`` once through the C kernel and once per eager chunk size per repeat, all
alternating, so that drift of the machine touches them alike. Prints the median milliseconds per
step (all four layers) and the ratio to the eager path at the chunk size in use (the path taken
where the C kernel is not built). Then, on the largest activation, per-map zero
counts by a float32 mask and a sum (what the hook does) against the alternatives.

    python benchmarks/capture_chunk.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import alternate, kernel_status, machine, median, paired_ratio, print_table  # noqa: E402

from repdiag.capture import _native, _stats  # noqa: E402

SHAPES = [(128, 32, 32, 32), (128, 64, 32, 32), (128, 128, 16, 16), (128, 128, 8, 8)]


@contextmanager
def chunk_size(entries: int) -> Iterator[None]:
    """Run the block with ``_stats.CPU_CHUNK = entries``, then put the value in use back."""
    old, _stats.CPU_CHUNK = _stats.CPU_CHUNK, entries
    try:
        yield
    finally:
        _stats.CPU_CHUNK = old


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    xs = [torch.randn(s).relu_() for s in SHAPES]
    default = _stats.CPU_CHUNK
    chunks = [1 << 17, 1 << 18, 1 << 19, 1 << 20, 1 << 21, 1 << 40]

    def run_with(chunk: int, native: bool = False) -> Callable[[], None]:
        stats = [_stats.StreamingStats(x.shape[1], x.device) for x in xs]
        with chunk_size(chunk), _native.use_native(native):  # the kernel needs no scratch
            scratch = [torch.empty(_stats.scratch_size(x)) for x in xs]

        def fn() -> None:
            with chunk_size(chunk), _native.use_native(native):
                for x, s, st in zip(xs, scratch, stats):
                    st.update(x, s)
        return fn

    arms = [run_with(c) for c in chunks] + ([run_with(default, native=True)] if _native.available() else [])
    times = alternate(arms, args.repeats)
    ref = times[chunks.index(default)]
    print(f"machine: {machine()}")
    print(f"StreamingStats.update on {len(SHAPES)} post-ReLU activations "
          f"({sum(torch.Size(s).numel() for s in SHAPES) / 1e6:.1f} M entries), {args.repeats} alternating repeats")
    print(kernel_status() + "\n")
    rows = []
    for c, t in zip(chunks, times):
        name = "eager, " + ("whole tensor" if c == 1 << 40 else f"{c >> 10} K chunks")
        mark = " (CPU_CHUNK)" if c == default else ""
        rows.append((name + mark, f"{median(t) * 1e3:.2f}", f"{paired_ratio(t, ref):.3f}"))
    if _native.available():
        rows.append(("C kernel, one pass", f"{median(times[-1]) * 1e3:.2f}", f"{paired_ratio(times[-1], ref):.3f}"))
    print_table(["path", "ms per step", "ratio to eager CPU_CHUNK"], rows)

    big = max(xs, key=lambda t: t.numel())
    maps = big.reshape(big.shape[0] * big.shape[1], -1)
    mask = torch.empty_like(maps)
    ways: dict[str, Callable[[], object]] = {
        "float32 mask + sum (in use)": lambda: torch.eq(maps, 0, out=mask).sum(dim=1),
        "bool mask + sum": lambda: (maps == 0).sum(dim=1),
        "count_nonzero": lambda: torch.count_nonzero(maps, dim=1),
        "vector_norm(ord=0)": lambda: torch.linalg.vector_norm(maps, ord=0, dim=1),
        "bfloat16 mask + sum": lambda: (maps == 0).to(torch.bfloat16).sum(dim=1, dtype=torch.float32),
    }
    def discard(f: Callable[[], object]) -> Callable[[], None]:
        return lambda: None if f() is None else None

    zt = alternate([discard(f) for f in ways.values()], args.repeats)
    print(f"\nper-map zero counts of the {tuple(big.shape)} activation, whole tensor:\n")
    print_table(["way", "ms", "ratio to in use"],
                [(name, f"{median(t) * 1e3:.2f}", f"{paired_ratio(t, zt[0]):.2f}") for name, t in zip(ways, zt)])


if __name__ == "__main__":
    main()
