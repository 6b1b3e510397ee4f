"""``repdiag demo``: trains BN and no-BN nets, records during training, writes the report."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from repdiag.checkpoint import load_checkpoint
from repdiag.cli import main
from repdiag.runs import is_run_dir, load_run
from repdiag.tables import read_table


@pytest.mark.slow
def test_demo_quick_writes_everything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--record-every", "8"]) == 0
    captured = capsys.readouterr()
    assert "report:" in captured.out and "sparsity" in captured.out  # the side-by-side terminal table
    assert "Summary table (mean ± sd over each group's runs):" in captured.out
    assert "Measured only in bn:" in captured.out  # the gamma table, without a nobn column of nan
    runs = [f"{g}-s{k}" for g in ("bn", "nobn") for k in range(3)]  # 3 seeds per arm by default
    for name in ("report.html", "report.md", "table.csv", "training.csv"):
        assert (out / name).is_file(), name
    for name in runs:
        assert is_run_dir(out / "runs" / name) and (out / "runs" / name / "final.pt").is_file(), name
    table = read_table(out / "table.csv")
    assert list(dict.fromkeys(table["run"])) == runs
    training = read_table(out / "training.csv")
    assert training["step"].nunique() >= 3  # values over training steps
    assert dict(training.groupby("run")["group"].first()) == {r: r.split("-")[0] for r in runs}
    logged = load_run(out / "runs" / "nobn-s2")  # the report's curves are the run directory's rows
    mine = training[training["run"] == "nobn-s2"]
    torch.testing.assert_close(torch.tensor(mine["value"].to_numpy(float)),
                               torch.tensor(logged["value"].to_numpy(float)), equal_nan=True)
    metrics = set(training["metric"])
    assert {"loss_range", "beta_smoothness", "ics_rel"} <= metrics, sorted(metrics)
    assert any(m.startswith("w1_shift") for m in metrics), sorted(metrics)
    html = (out / "report.html").read_text()
    assert "test accuracy" in html and "over training" in html and "6 runs in 2 groups" in html
    first = html.index("<h2")
    assert html.startswith("<h2>Findings: bn vs nobn</h2>", first)  # the report opens with the findings
    assert html.count("95% CI") >= 8 and html.count("<td class=\"l v-") == 8  # one verdict per question
    bn = load_checkpoint(out / "runs" / "bn-s1" / "final.pt")  # rebuilt from the recorded factory, no --model
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in bn.modules())
    nobn = load_checkpoint(out / "runs" / "nobn-s0" / "final.pt")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in nobn.modules())
    # one progress bar, full at the end, that names its phases
    last = captured.err.replace("\r", "\n").strip().splitlines()
    bar = [ln for ln in last if "%|" in ln]
    assert bar and bar[-1].startswith("done in") and "100%" in bar[-1], bar[-3:]
    phases = " ".join(bar)
    for phase in ("train bn-s0 (1/6)", "train nobn-s2 (6/6)", "measure nobn-s0", "pca of 2 runs", "findings",
                  "plot sparsity", "write report.html"):
        assert phase in phases, phase


def test_demo_refuses_an_out_dir_whose_runs_are_not_its_own(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    (tmp_path / "runs" / "bn-s0").mkdir(parents=True)  # not a run directory: never deleted
    (tmp_path / "runs" / "bn-s0" / "notes.txt").write_text("mine")
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 1
    assert "not a run directory of a previous demo" in capsys.readouterr().err
    assert (tmp_path / "runs" / "bn-s0" / "notes.txt").read_text() == "mine"


def test_demo_rejects_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--epochs", "0", "--out", str(tmp_path)]) == 1
    assert "--epochs must be an integer >= 1" in capsys.readouterr().err
    assert main(["demo", "--seeds", "0", "--out", str(tmp_path)]) == 1
    assert "--seeds must be an integer >= 1" in capsys.readouterr().err
    assert main(["demo", "--lr", "-1", "--out", str(tmp_path)]) == 1
    assert "--lr must be a positive number" in capsys.readouterr().err
    assert main(["demo", "--metrics", "nope", "--out", str(tmp_path)]) == 1
    assert "unknown metric 'nope'" in capsys.readouterr().err
