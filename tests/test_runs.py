"""Run directories: attach(..., log_dir=...) writes meta.json and Parquet parts as training goes;
load_run and pd.read_parquet read them back, also after a SIGKILL; memory stays fixed."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

import repdiag
from repdiag.runs import is_run_dir, read_meta
from repdiag.tables import CORE_COLUMNS


def bn_mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 16), nn.BatchNorm1d(16),
                         nn.ReLU(), nn.Linear(16, 3))


def train(rec: repdiag.Recorder, model: nn.Module, steps: int) -> None:
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g)
        model(x)
        rec.step(labels=y)


def test_run_directory_layout_and_round_trip(tmp_path: Path) -> None:
    model = bn_mlp()
    rec = repdiag.attach(model, run="bn-s1", group="bn", seed=1, log_dir=tmp_path / "bn-s1", snapshot_every=2)
    train(rec, model, 5)
    live = rec.table()  # parts at steps 2 and 4, plus the pending buffers at step 5
    assert sorted(set(live.step)) == [2, 4, 5]
    rec.detach()  # writes the step-5 snapshot
    run = tmp_path / "bn-s1"
    assert is_run_dir(run) and not is_run_dir(tmp_path)
    assert sorted(p.name for p in (run / "rows").iterdir()) == [f"part-{i:06d}.parquet" for i in range(3)]
    meta = json.loads((run / "meta.json").read_text())
    assert meta["format"] == "repdiag-run/1" and (meta["run"], meta["group"], meta["seed"]) == ("bn-s1", "bn", 1)
    assert meta["config"]["snapshot_every"] == 2 and meta["config"]["resolved_layers"] == ["2", "5"]
    assert set(meta["versions"]) == {"repdiag", "torch", "python", "numpy", "pandas"}
    assert meta["layers"] == [
        {"layer": "2", "module": "ReLU", "role": "activation", "layout": "(N, C)", "depth": 2},
        {"layer": "5", "module": "ReLU", "role": "activation", "layout": "(N, C)", "depth": 5},
    ]
    loaded = repdiag.load_run(run)
    assert loaded.attrs["meta"] == read_meta(run)
    assert list(loaded.columns[:8]) == list(CORE_COLUMNS) and list(loaded.columns[-2:]) == ["group", "seed"]
    assert str(loaded["group"].dtype) == "string" and str(loaded["seed"].dtype) == "Int64"
    assert set(loaded.group) == {"bn"} and set(loaded.seed) == {1}
    # same rows and values (in memory, parameter columns keep their object/int dtypes; on disk float64 or string)
    def cells(f: pd.DataFrame) -> list[list[object]]:
        return f.astype(object).where(f.notna(), None).values.tolist()

    assert list(loaded.columns) == list(live.columns) and cells(loaded) == cells(live)
    after = rec.table()  # after detach: what was written, nothing pending
    pd.testing.assert_frame_equal(after.reset_index(drop=True), loaded.reset_index(drop=True))
    raw = pd.read_parquet(run / "rows")  # plain pandas on the parts
    assert len(raw) == len(loaded) and set(loaded.columns) <= set(raw.columns)


def test_read_parquet_sees_columns_that_appear_in_later_parts(tmp_path: Path) -> None:
    """Part 0 is rewritten with empty cells when a later part brings a new column, because
    pyarrow takes a directory's columns from its first file."""
    model = bn_mlp()
    rec = repdiag.attach(model, metrics=["sparsity"], log_dir=tmp_path / "r", snapshot_every=1)
    train(rec, model, 2)
    rec._history.append(rec._history.label(repdiag.tables.make_table(
        [{"run": rec.run, "metric": "extra", "value": 1.5, "step_size": 0.1, "layer": "2", "depth": 2}])))
    rec.detach()
    raw = pd.read_parquet(tmp_path / "r" / "rows")
    assert "step_size" in raw.columns
    assert raw.loc[raw.metric == "extra", "step_size"].tolist() == [0.1]
    assert raw.loc[raw.metric == "sparsity", "step_size"].isna().all()
    loaded = repdiag.load_run(tmp_path / "r")
    assert loaded.run.unique().tolist() == ["r"]  # run name defaults to the directory's name
    assert len(loaded) == len(raw)


def test_log_dir_that_holds_a_run_is_refused(tmp_path: Path) -> None:
    model = bn_mlp()
    with repdiag.attach(model, log_dir=tmp_path / "r") as rec:
        train(rec, model, 1)
    with pytest.raises(repdiag.ConfigError, match="already holds a run"):
        repdiag.attach(model, log_dir=tmp_path / "r")
    assert not any(m._forward_hooks for m in model.modules())


def test_load_run_rejects_a_plain_directory(tmp_path: Path) -> None:
    with pytest.raises(repdiag.ConfigError, match="must be a run directory"):
        repdiag.load_run(tmp_path)


def test_group_without_log_dir_labels_the_table() -> None:
    model = bn_mlp()
    with repdiag.attach(model, group="bn", seed=3) as rec:
        train(rec, model, 1)
        t = rec.table()
    assert set(t.group) == {"bn"} and set(t.seed) == {3}
    with repdiag.attach(model) as rec:
        train(rec, model, 1)
        assert "group" not in rec.table().columns  # unchanged without group= / log_dir=


def test_depths_are_unique_per_layer_within_a_run() -> None:
    """BN-gamma rows (depth among norm layers) used to share depths with activation rows."""
    model = bn_mlp()
    with repdiag.attach(model) as rec:
        train(rec, model, 1)
        t = rec.table()
    per_layer = t.groupby("layer")["depth"].unique()
    assert all(len(d) == 1 for d in per_layer)
    depths = {lay: int(d[0]) for lay, d in per_layer.items() if lay != "(model)"}
    assert depths == {"1": 1, "2": 2, "4": 4, "5": 5}  # forward order over the Sequential
    assert len(set(depths.values())) == len(depths)


_CHILD = textwrap.dedent("""
    import sys, torch, repdiag
    from torch import nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    rec = repdiag.attach(model, run="killed", group="g", seed=0, log_dir=sys.argv[1], snapshot_every=1,
                         metrics=["sparsity", "dead_units"])
    step = 0
    while True:  # trains until killed
        x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
        rec.step(labels=y)  # snapshot_every=1: the step's part is on disk when this returns
        step += 1
        print(step, flush=True)
""")


@pytest.mark.slow
def test_sigkilled_run_keeps_every_completed_snapshot(tmp_path: Path) -> None:
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(run)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    done = 0
    for line in proc.stdout:
        done = int(line)
        if done >= 12:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    t = repdiag.load_run(run)
    steps = sorted(set(t.step.tolist()))
    # every step the child reported is there (and perhaps the ones it finished after the last print)
    assert steps[:done] == list(range(1, done + 1)) and steps == list(range(1, len(steps) + 1))
    assert set(t.metric) == {"sparsity", "dead_units"}
    per_step = t.groupby("step").size()
    assert (per_step == per_step.iloc[0]).all()  # no part is half-written
    others = [p.name for p in (run / "rows").iterdir() if not p.name.startswith("part-")]
    assert all(name.startswith(".") and name.endswith(".tmp") for name in others)  # at most an unfinished tmp


def _traced_after(rec: repdiag.Recorder, model: nn.Module, snapshots: int) -> int:
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    for _ in range(snapshots):
        model(x)
        rec.step(labels=y)
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


@pytest.mark.slow
def test_recorder_memory_is_the_same_after_2000_snapshots_as_after_20(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    tracemalloc.start()
    try:
        rec = repdiag.attach(model, metrics=["sparsity"], log_dir=tmp_path / "r", snapshot_every=1, max_samples=64)
        at_20 = _traced_after(rec, model, 20)
        buffers_20 = rec.memory_bytes()
        at_2000 = _traced_after(rec, model, 1980)
        held = len(rec._history)
        assert rec.memory_bytes() == buffers_20
        rec.detach()
        # the control: the same loop without log_dir keeps every snapshot's frame in memory
        mem = repdiag.attach(model, metrics=["sparsity"], snapshot_every=1, max_samples=64)
        ctl_20 = _traced_after(mem, model, 20)
        ctl_500 = _traced_after(mem, model, 480)
        mem.detach()
    finally:
        tracemalloc.stop()
    assert held == 0 and len(mem._history) == 500
    assert abs(at_2000 - at_20) < 64 * 1024, (at_20, at_2000)  # Python heap: equal up to allocator noise
    assert ctl_500 - ctl_20 > 500_000, (ctl_20, ctl_500)  # the measurement does see growth (~1-2 kB a frame)
    assert len(list((tmp_path / "r" / "rows").iterdir())) == 2000
