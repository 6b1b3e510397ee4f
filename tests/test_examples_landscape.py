"""The landscape and BN-only examples run end to end in --quick mode."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from repdiag.tables import read_table

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_landscape_bn_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mod = load("landscape_bn")
    assert mod.main(["--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "beta_smoothness" in printed and "smoother with BN" in printed
    table = read_table(tmp_path / "table.csv")
    assert set(table["run"]) == {"bn/seed0", "none/seed0"}
    model_rows = table[table["layer"] == "(model)"]
    assert sorted(model_rows["step"].unique().tolist()) == [1, 5]  # 8 steps, a probe every 4 from step 1
    assert set(table["metric"]) >= {"loss_range", "grad_change", "beta_smoothness", "ics_l2", "ics_cos", "ics_rel"}
    beta = model_rows[model_rows["metric"] == "beta_smoothness"]["value"]
    assert beta.notna().all() and (beta > 0).all()
    ics = table[table["metric"] == "ics_l2"]
    assert (ics[ics["depth"] == 0]["value"] == 0).all() and (ics[ics["depth"] > 0]["value"] > 0).all()
    summary = pd.read_csv(tmp_path / "summary.csv", index_col=0)
    assert {"bn mean", "none mean"} <= set(summary.columns)
    assert (tmp_path / "landscape.png").stat().st_size > 0


@pytest.mark.slow
def test_bn_only_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mod = load("bn_only")
    assert mod.main(["--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "BN-only above chance" in printed
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert runs["setup"].tolist() == list(mod.SETUPS)
    count = dict(zip(runs["setup"], runs["trainable"]))
    assert count["bn_only"] == count["random"] == 2 * (8 + 16 + 16 + 64)  # the control matches BN-only's count
    assert count["bn_output"] == count["bn_only"] + count["output_only"]
    assert runs["test_accuracy"].between(0, 1).all()
    assert runs.set_index("setup").loc["full", "test_accuracy"] > 0.3
    gamma = read_table(tmp_path / "gamma_table.csv")
    at_init = gamma[(gamma["metric"] == "gamma_below_ref")].groupby(["threshold", "layer"])["value"].nunique()
    assert (at_init == 1).all()  # every set-up starts from the same gamma ~ U[0, 1] draw per seed
    off = read_table(tmp_path / "channels_off.csv")
    assert set(off["metric"]) == {"channels_off"} and off["value"].between(0, 1).all()
