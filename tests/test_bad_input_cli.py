"""CLI faults of issue 14: one line on stderr and exit 1, checked before any work; and the atomic
--out (an interrupted ``repdiag report`` leaves the old report or the new one, never a mix)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import repdiag
from repdiag.cli import main
from repdiag.models import small_cnn


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    path = tmp_path / "a.pt"
    repdiag.save_checkpoint(small_cnn("bn"), path, factory="repdiag.models:small_cnn", norm="bn")
    return path


def _one_line(capsys: pytest.CaptureFixture[str], *parts: str) -> None:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    for p in parts:
        assert p in err[0], err[0]


def test_seed_past_torch_range(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(ckpt), "--seed", "99999999999999999999", "--out", str(tmp_path / "o"), "-q"]) == 1
    _one_line(capsys, "--seed must be an integer in", "got 99999999999999999999")


def test_model_module_raising_at_import(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "badmod_issue14.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["report", str(ckpt), "--model", "badmod_issue14:f", "--out", str(tmp_path / "o"), "-q"]) == 1
    _one_line(capsys, "importing module 'badmod_issue14'", "RuntimeError: boom at import")


def test_demo_out_existing_file_refused_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import repdiag.training

    def no_training(*a: object, **k: object) -> None:
        raise AssertionError("trained before validating --out")

    monkeypatch.setattr(repdiag.training, "fit", no_training)
    f = tmp_path / "afile"
    f.write_text("x")
    assert main(["demo", "--quick", "--out", str(f)]) == 1
    _one_line(capsys, "--out must name a directory", "an existing file")
    assert main(["demo", "--quick", "--out", str(f / "sub")]) == 1
    _one_line(capsys, "--out must lie under a directory", "is a file")


def test_out_unwritable_or_too_long(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--quick", "--out", "/proc/repdiag-nonexistent/x"]) == 1
    _one_line(capsys, "--out", "cannot be used as the output directory")
    assert main(["report", str(ckpt), "--out", str(tmp_path / ("x" * 300)), "-q"]) == 1
    _one_line(capsys, "--out", "File name too long")


def test_out_the_working_directory_is_refused(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(ckpt), "--out", ".", "-q"]) == 1
    _one_line(capsys, "--out must be a directory of its own")


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_sigint_during_report_leaves_old_or_new(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    base = [sys.executable, "-m", "repdiag", "report", str(ckpt), "--embedding", "pca", "-q", "--samples", "200"]
    subprocess.run(base + ["--out", str(out), "--names", "old"], check=True, capture_output=True)
    (out / "mine.txt").write_text("kept")  # a file of the user's own: carried over to the new report
    old = _snapshot(out)
    ref = tmp_path / "ref"
    subprocess.run(base + ["--out", str(ref), "--names", "new"], check=True, capture_output=True)
    new = {**_snapshot(ref), "mine.txt": b"kept"}
    seen_tmp = False
    for attempt in range(3):
        proc = subprocess.Popen(base + ["--out", str(out), "--names", "new"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        t0 = time.monotonic()
        while proc.poll() is None and time.monotonic() - t0 < 120:
            if any(".tmp-" in p.name and "probe" not in p.name for p in tmp_path.iterdir()):
                seen_tmp = True
                time.sleep(0.05 * attempt)  # part-way through the write
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.005)
        proc.wait(120)
        got = _snapshot(out)
        keys = set(got)
        assert keys in (set(old), set(new)), (keys ^ set(old), keys ^ set(new))
        if proc.returncode == 0:
            assert got.keys() == new.keys() and got["table.csv"] == new["table.csv"]
        else:
            assert proc.returncode == 130, proc.stderr.read() if proc.stderr else ""
            assert got == old
        assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
        if proc.returncode == 0:
            subprocess.run(base + ["--out", str(out), "--names", "old"], check=True, capture_output=True)
            (out / "mine.txt").write_text("kept")
            old = _snapshot(out)
    assert seen_tmp, "the temporary directory never appeared: the write did not go through it"
