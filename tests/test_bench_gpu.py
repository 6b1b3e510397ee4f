"""benchmarks/gpu.py's smoke mode (--device cpu) runs to the end and prints every section."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_benchmark_smoke_mode_runs() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    for section in ("SMOKE MODE", "capture overhead", "cifar_cnn(bn)", "transformer encoder", "every=10",
                    "rec.table()", "2 layers x 512 rows x 64", "silhouette n=3000", "x the floor",
                    "CUDA tests: not run"):
        assert section in out.stdout, (section, out.stdout[-2000:])
