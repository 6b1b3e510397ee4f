"""The BN sparsity / clustering example runs end to end in --quick mode."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

from repdiag.tables import read_table

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "bn_sparsity_clustering.py"


@pytest.mark.slow
def test_bn_sparsity_clustering_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bn_sparsity_clustering", EXAMPLE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    assert mod.main(["--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "silhouette_labels" in printed and "bn mean" in printed and "none std" in printed
    table = read_table(tmp_path / "table.csv")
    assert set(table["metric"]) == set(mod.METRICS)
    assert set(table["run"]) == {"none/seed0", "none/seed1", "bn/seed0", "bn/seed1"}
    assert table["value"].notna().all()
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert len(summary) == 4 * len(mod.METRICS)  # four ReLU layers in the SmallCNN
    acc = pd.read_csv(tmp_path / "accuracy.csv", index_col=0)
    assert (acc["mean"] > 0.5).all()  # both nets learn something in two epochs
