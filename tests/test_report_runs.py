"""``repdiag report`` on run directories and checkpoints, mixed: training curves from the logged
rows, final.pt evaluated like any checkpoint, groups from --group or the run's metadata."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

import repdiag
from repdiag.checkpoint import save_checkpoint
from repdiag.cli import main
from repdiag.data import digits_split
from repdiag.models import he_init, small_cnn
from repdiag.tables import read_table
from repdiag.training import fit

from .test_report import FAST, parse

METRICS = ["sparsity", "silhouette_labels"]


def _run_dir(root: Path, name: str, group: str, norm: str, seed: int, final: bool) -> Path:
    xtr, ytr, _, _ = digits_split(seed=0)
    model = he_init(small_cnn(norm), torch.Generator().manual_seed(seed))
    d = root / name
    rec = repdiag.attach(model, metrics=METRICS, snapshot_every=1, max_samples=128, run=name, group=group, seed=seed,
                         log_dir=d)
    try:
        fit(model, xtr[:256], ytr[:256], epochs=1, lr=0.02, seed=seed, recorder=rec)
    finally:
        rec.detach()
    if final:
        save_checkpoint(model, d / "final.pt", factory="repdiag.models:small_cnn", norm=norm)
    return d


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    out = {"bn0": _run_dir(root, "bn-s0", "bn", "bn", 0, final=True),
           "bn1": _run_dir(root, "bn-s1", "bn", "bn", 1, final=False),
           "nobn0": _run_dir(root, "nobn-s0", "nobn", "none", 0, final=True)}
    model = he_init(small_cnn("none"), torch.Generator().manual_seed(5)).eval()
    out["ckpt"] = save_checkpoint(model, root / "plain.pt", factory="repdiag.models:small_cnn", norm="none")
    return out


def test_report_on_run_dirs_and_a_checkpoint_mixed(inputs: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rep"
    args = [str(inputs["bn0"]), str(inputs["bn1"]), str(inputs["nobn0"]), str(inputs["ckpt"])]
    assert main(["report", *args, "--out", str(out), "--group", f"plain={inputs['ckpt']}", *FAST]) == 0
    capsys.readouterr()
    table = read_table(out / "table.csv")  # evaluated: the run dirs with final.pt, and the checkpoint
    assert list(dict.fromkeys(table["run"])) == ["bn-s0", "nobn-s0", "plain"]
    training = read_table(out / "training.csv")  # logged: every run directory, final.pt or not
    assert list(dict.fromkeys(training["run"])) == ["bn-s0", "bn-s1", "nobn-s0"]
    assert dict(training.groupby("run")["group"].first()) == {"bn-s0": "bn", "bn-s1": "bn", "nobn-s0": "nobn"}
    for key, name in (("bn0", "bn-s0"), ("bn1", "bn-s1")):  # the curves are the logged rows, unchanged
        logged = repdiag.load_run(inputs[key])
        got = training[training["run"] == name]
        assert len(got) == len(logged) and got["step"].nunique() >= 3
        torch.testing.assert_close(torch.tensor(got["value"].to_numpy(float)),
                                   torch.tensor(logged["value"].to_numpy(float)), equal_nan=True)
    doc = parse(out / "report.html")
    text = "".join(doc.text)
    assert "4 runs in 3 groups" in text and "bn (2 runs: bn-s0, bn-s1)" in text and "plain (1 run: plain)" in text
    assert "Over training steps, a panel per layer: fraction of zero entries" in text
    assert "final.pt (evaluated)" in text
    assert (out / "plots" / "steps_sparsity.png").read_bytes() in doc.images
    # findings first: bn (2 runs) vs nobn (1 run) gives differences without intervals, said so
    raw = (out / "report.html").read_text()
    assert raw.index("Findings: bn vs nobn") < raw.index("<h2", raw.index("Findings") + 1)
    assert "too few runs" in text and "no interval" in text and "not compared: plain" in text
    assert "bn 0." in text  # each group's value, in numbers


def test_final_pt_is_evaluated_as_the_checkpoint_itself(inputs: dict[str, Path], tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["report", str(inputs["bn0"]), "--out", str(a), *FAST]) == 0
    assert main(["report", str(inputs["bn0"] / "final.pt"), "--names", "bn-s0", "--out", str(b), *FAST]) == 0
    ta, tb = read_table(a / "table.csv"), read_table(b / "table.csv")
    ta, tb = (t.sort_values(["metric", "layer"]).reset_index(drop=True) for t in (ta, tb))
    pd.testing.assert_frame_equal(ta[["layer", "metric"]], tb[["layer", "metric"]])
    torch.testing.assert_close(torch.tensor(ta["value"].to_numpy(float)), torch.tensor(tb["value"].to_numpy(float)),
                               equal_nan=True)


def test_groups_from_glob_override_the_metadata(inputs: dict[str, Path], tmp_path: Path) -> None:
    from repdiag.cli._runs import gather_sources

    root = inputs["bn0"].parent
    dirs = [str(inputs[k]) for k in ("bn0", "bn1", "nobn0")]
    default = gather_sources(dirs, None, None)
    assert [(s.name, s.group, s.seed) for s in default] == [("bn-s0", "bn", 0), ("bn-s1", "bn", 1),
                                                           ("nobn-s0", "nobn", 0)]
    assert [s.checkpoint is not None for s in default] == [True, False, True]
    regrouped = gather_sources(dirs, None, [f"all={root}/*-s0", f"rest={root}/*"])
    assert [s.group for s in regrouped] == ["all", "rest", "all"]  # the first matching --group wins


@pytest.mark.parametrize("extra, message", [
    (["--group", "bn"], "--group must be NAME=GLOB"),
    (["--group", "x=/nowhere/*"], "--group x=/nowhere/* matches none of the inputs"),
])
def test_bad_group_options_are_one_line_errors(inputs: dict[str, Path], tmp_path: Path, extra: list[str],
                                               message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(inputs["bn0"]), *extra, "--out", str(tmp_path), *FAST]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_directory_that_is_not_a_run_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), *FAST]) == 1
    err = capsys.readouterr().err
    assert "is a directory without one" in err and "save_pretrained directory (config.json)" in err


def test_doctests_of_the_run_inputs_module() -> None:
    import doctest

    from repdiag.cli import _runs

    assert doctest.testmod(_runs, raise_on_error=False).failed == 0
