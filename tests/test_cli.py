"""The ``repdiag`` command: help for every command, no heavy imports for --help, and one clear
line (no traceback, non-zero exit) for each kind of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from repdiag.checkpoint import save_checkpoint
from repdiag.cli import main
from repdiag.cli._main import COMMANDS
from repdiag.models import small_cnn

HEAVY = ("torch", "ot", "umap", "matplotlib", "sklearn", "numba", "pandas")


@pytest.mark.parametrize("argv", [["--help"], ["report", "--help"], ["demo", "--help"], ["metrics", "--help"]])
def test_help_imports_nothing_heavy(argv: list[str]) -> None:
    code = (f"import sys\nfrom repdiag.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n"
            f"    pass\nprint('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "usage: repdiag" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "HEAVY=", out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: repdiag {command}") and "--debug" in out


def test_metrics_lists_registry(capsys: pytest.CaptureFixture[str]) -> None:
    from repdiag.metrics import available_metrics, default_metrics

    assert main(["metrics"]) == 0
    out = capsys.readouterr().out
    for name, m in available_metrics().items():
        assert any(line.startswith(name + " ") and m.description in line for line in out.splitlines())
    assert main(["metrics", "--default"]) == 0
    assert f"{len(default_metrics())} metric(s)" in capsys.readouterr().out


# -- bad inputs ----------------------------------------------------------------------------------
class _CreatesFile:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("bad")
    bn = small_cnn("bn")
    out = {"good": str(save_checkpoint(bn, d / "good.pt", factory="repdiag.models:small_cnn", norm="bn"))}
    torch.save(bn.state_dict(), d / "raw.pt")
    out["raw"] = str(d / "raw.pt")
    (d / "empty.pt").write_bytes(b"")
    out["empty"] = str(d / "empty.pt")
    (d / "junk.pt").write_bytes(b"this is not a checkpoint at all" * 10)
    out["junk"] = str(d / "junk.pt")
    out["pwned"] = str(d / "pwned.txt")
    torch.save({"state_dict": _CreatesFile(out["pwned"])}, d / "evil.pt")
    out["evil"] = str(d / "evil.pt")
    torch.save({"state_dict": bn.state_dict(), "repdiag": {"factory": "os:system", "kwargs": {"command": "true"}}},
               d / "foreign.pt")
    out["foreign"] = str(d / "foreign.pt")
    np.savez(d / "wrongshape.npz", x=np.zeros((10, 3), np.float32), y=np.zeros(10, np.int64))
    out["wrongshape"] = str(d / "wrongshape.npz")
    np.savez(d / "nox.npz", a=np.zeros((10, 3)))
    out["nox"] = str(d / "nox.npz")
    np.savez(d / "badlabels.npz", x=np.zeros((10, 1, 8, 8), np.float32), y=np.zeros(7, np.int64))
    out["badlabels"] = str(d / "badlabels.npz")
    out["dir"] = str(d)
    return out


# (id, argv builder, expected message fragment)
BAD: list[tuple[str, Callable[[dict[str, str]], list[str]], str]] = [
    ("missing-file", lambda f: [f["dir"] + "/nope.pt"], "does not exist"),
    ("directory", lambda f: [f["dir"]], "is a directory"),
    ("empty-file", lambda f: [f["empty"]], "is empty"),
    ("corrupt-file", lambda f: [f["junk"]], "not a readable PyTorch checkpoint"),
    ("pickled-code", lambda f: [f["evil"]], "unpickling them can run any code"),
    ("foreign-factory", lambda f: [f["foreign"]], "not one of repdiag's built-in models"),
    ("weights-without-model", lambda f: [f["raw"]], "holds only weights"),
    ("wrong-architecture", lambda f: [f["raw"], "--model", "repdiag.models:mlp"], "does not fit the model"),
    ("wrong-shapes", lambda f: [f["raw"], "--model", "repdiag.models:small_cnn", "--model-kwargs", '{"width": 8}'],
     "other shapes"),
    ("model-spec-no-colon", lambda f: [f["raw"], "--model", "small_cnn"], "must look like 'package.module:factory'"),
    ("model-module-missing", lambda f: [f["raw"], "--model", "nosuchpkg_xyz.mod:f"], "cannot import module"),
    ("model-attr-missing", lambda f: [f["raw"], "--model", "repdiag.models:nope"], "has no callable 'nope'"),
    ("model-file-missing", lambda f: [f["raw"], "--model", "nowhere/arch.py:f"], "does not exist"),
    ("kwargs-not-json", lambda f: [f["raw"], "--model", "repdiag.models:small_cnn", "--model-kwargs", "{norm: bn}"],
     "must be a JSON object"),
    ("kwargs-not-dict", lambda f: [f["raw"], "--model", "repdiag.models:small_cnn", "--model-kwargs", "[1]"],
     "must be a JSON object (a dict)"),
    ("kwargs-wrong-name", lambda f: [f["raw"], "--model", "repdiag.models:small_cnn", "--model-kwargs",
                                     '{"depth": 3}'], "does not accept keyword arguments"),
    ("kwargs-without-model", lambda f: [f["good"], "--model-kwargs", "{}"], "--model-kwargs needs --model"),
    ("too-many-models", lambda f: [f["good"], f["good"], "--model", "repdiag.models:mlp", "--model", "a:b",
                                   "--model", "c:d"], "once per checkpoint (2)"),
    ("unknown-metric", lambda f: [f["good"], "--metrics", "sparsity,silhoutte_labels"], "unknown metric"),
    ("empty-metrics", lambda f: [f["good"], "--metrics", ","], "at least one metric"),
    ("unknown-layer", lambda f: [f["good"], "--layers", "features.99"], "matches no module"),
    ("data-missing", lambda f: [f["good"], "--data", f["dir"] + "/nope.npz"], "does not exist"),
    ("data-unknown-spec", lambda f: [f["good"], "--data", "imagenet"], "--data must be 'digits'"),
    ("data-wrong-shape", lambda f: [f["good"], "--data", f["wrongshape"]], "does not fit model"),
    ("data-function-missing", lambda f: [f["good"], "--data", "nosuchpkg_xyz.data:load"],
     "cannot import module 'nosuchpkg_xyz.data' of data spec"),
    ("data-no-x", lambda f: [f["good"], "--data", f["nox"]], "holds input(s) 'a', but model 'good' takes forward(input)"),
    ("data-label-count", lambda f: [f["good"], "--data", f["badlabels"]], "one integer class per sample"),
    ("samples-zero", lambda f: [f["good"], "--samples", "0"], "--samples must be an integer >= 1"),
    ("bad-device", lambda f: [f["good"], "--device", "toaster"], "must be a torch device"),
    ("names-count", lambda f: [f["good"], "--names", "a,b"], "one non-empty name per checkpoint"),
    ("names-duplicate", lambda f: [f["good"], f["good"], "--names", "a,a"], "must be distinct"),
    ("embed-layer-unknown", lambda f: [f["good"], "--embedding", "pca", "--embed-layers", "99"],
     "--embed-layers must name hooked layers"),
]


@pytest.mark.parametrize(("argv", "message"), [(b, m) for _, b, m in BAD], ids=[i for i, _, _ in BAD])
def test_bad_input_gives_one_line(files: dict[str, str], tmp_path: Path, argv: Callable[[dict[str, str]], list[str]],
                                  message: str, capsys: pytest.CaptureFixture[str]) -> None:
    # defaults first: a case's own option comes later and wins (argparse keeps the last value)
    args = ["report", "--out", str(tmp_path / "out"), "--quiet", "--samples", "64", "--metrics", "sparsity",
            "--embedding", "none", *argv(files)]
    code = main(args)
    err = capsys.readouterr().err
    assert code != 0
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("repdiag report: error: ")
    assert message in lines[0], lines[0]
    assert not Path(files["pwned"]).exists()


def test_bad_input_table_is_large_and_distinct() -> None:
    assert len(BAD) >= 15
    assert len({m for _, _, m in BAD}) >= 15


def test_crafted_pickle_runs_nothing_without_trust(tmp_path: Path) -> None:
    target = tmp_path / "created.txt"
    evil = tmp_path / "evil.pt"
    torch.save(_CreatesFile(str(target)), evil)
    assert main(["report", str(evil), "--out", str(tmp_path / "o"), "--quiet", "--embedding", "none"]) != 0
    assert not target.exists()
    assert not (tmp_path / "o").exists()


def test_debug_shows_the_traceback(files: dict[str, str], tmp_path: Path) -> None:
    from repdiag import CheckpointError

    with pytest.raises(CheckpointError):
        main(["--debug", "report", files["empty"], "--out", str(tmp_path / "o")])


def test_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["report", "x.pt", "--embedding", "tsne"])
    assert e.value.code == 2
    assert "invalid choice: 'tsne'" in capsys.readouterr().err


def test_model_kwargs_json_reaches_factory(files: dict[str, str], tmp_path: Path) -> None:
    code = main(["report", files["raw"], "--model", "repdiag.models:small_cnn", "--model-kwargs",
                 json.dumps({"norm": "bn"}), "--out", str(tmp_path / "o"), "--quiet", "--samples", "64",
                 "--metrics", "sparsity", "--embedding", "none"])
    assert code == 0
