"""The EM-shift / unitization example runs end to end in --quick mode."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

from repdiag.tables import read_table

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "em_shift_unitization.py"


@pytest.mark.slow
def test_em_shift_unitization_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("em_shift_unitization", EXAMPLE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    assert mod.main(["--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "w1_shift_upper" in printed and "unitized_fixed1 mean" in printed
    table = read_table(tmp_path / "table.csv")
    assert set(table["run"]) == {f"{v}/seed{s}" for v in mod.VARIANTS for s in (0, 1)}
    assert set(table["metric"]) == {"w1_shift", "w1_shift_unit", "w1_shift_sliced", "w1_shift_upper",
                                    "w1_shift_lower"}
    assert set(table["scale"]) == {"raw", "normalized"}
    assert table["value"].notna().all() and (table["value"] > 0).all()
    # the estimators bracket the exact value on every row pair
    wide = table.pivot_table(index=["run", "step", "layer", "scale"], columns="metric", values="value")
    assert (wide["w1_shift_lower"] <= wide["w1_shift"] * (1 + 1e-5)).all()
    assert (wide["w1_shift"] <= wide["w1_shift_upper"] * (1 + 1e-5)).all()
    # every normalised row is its raw row divided by one scale per (run, step, layer)
    ratio = wide.xs("normalized", level="scale") / wide.xs("raw", level="scale")
    spread = ratio.max(axis=1) / ratio.min(axis=1)
    assert ((spread - 1).abs() < 1e-9).all()
    assert ratio.notna().all().all()
    assert (tmp_path / "em_shift.png").stat().st_size > 0
    runs = pd.read_csv(tmp_path / "runs.csv", header=[0, 1], index_col=0)
    assert runs.loc["unitized_fixed1", ("mean_alpha", "mean")] == 1.0
