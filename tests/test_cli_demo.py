"""``repdiag demo``: trains BN and no-BN nets, records during training, writes the report."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from repdiag.checkpoint import load_checkpoint
from repdiag.cli import main
from repdiag.tables import read_table


@pytest.mark.slow
def test_demo_quick_writes_everything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--record-every", "8"]) == 0
    stdout = capsys.readouterr().out
    assert "report:" in stdout and "sparsity" in stdout  # the side-by-side terminal table
    for name in ("report.html", "report.md", "table.csv", "training.csv", "bn.pt", "nobn.pt"):
        assert (out / name).is_file(), name
    table = read_table(out / "table.csv")
    assert set(table["run"]) == {"bn", "nobn"}
    training = read_table(out / "training.csv")
    assert training["step"].nunique() >= 3  # values over training steps
    metrics = set(training["metric"])
    assert {"loss_range", "beta_smoothness", "ics_rel"} <= metrics, sorted(metrics)
    assert any(m.startswith("w1_shift") for m in metrics), sorted(metrics)
    html = (out / "report.html").read_text()
    assert "test accuracy" in html and "During training" in html
    bn = load_checkpoint(out / "bn.pt")  # rebuilt from the recorded factory, no --model
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in bn.modules())
    nobn = load_checkpoint(out / "nobn.pt")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in nobn.modules())


def test_demo_rejects_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--epochs", "0", "--out", str(tmp_path)]) == 1
    assert "--epochs must be an integer >= 1" in capsys.readouterr().err
    assert main(["demo", "--lr", "-1", "--out", str(tmp_path)]) == 1
    assert "--lr must be a positive number" in capsys.readouterr().err
    assert main(["demo", "--metrics", "nope", "--out", str(tmp_path)]) == 1
    assert "unknown metric 'nope'" in capsys.readouterr().err
