"""torch.distributed aggregation: two gloo ranks on CPU, each fed half of a data set, against one
process fed all of it; merged reservoirs; ranks that differ or fail raise instead of hanging."""

from __future__ import annotations

import datetime
import os
import socket
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp

import repdiag
from repdiag import ConfigError, DistributedError
from repdiag.capture import Reservoir
from repdiag.capture._distributed import merge_reservoirs
from repdiag.metrics import LayerData, register_metric, unregister_metric
from repdiag.models import small_cnn

N, BATCH, FULL = 120, 20, 1000  # FULL covers every sample: reservoirs hold the whole union
STREAMING = ["sparsity", "dead_units", "mean", "std", "nonfinite"]
PROBE = "t_dist_class_spread"  # a reservoir-based test metric (samples + labels)
TIMEOUT_S = 3.0  # how long ranks wait for a missing rank in these tests


def _class_spread(data: LayerData) -> Iterator[dict[str, Any]]:
    """Sum over classes of each class centroid's norm, plus the buffer's sum of squares."""
    x, y = data.samples.double(), data.labels
    cents = torch.stack([x[y == c].mean(0) for c in y.unique()])
    yield {"value": float(cents.norm(dim=1).sum() + x.pow(2).sum()), "n": int(x.shape[0])}


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(N, 1, 8, 8, generator=g), torch.randint(0, 4, (N,), generator=g)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return small_cnn(norm="bn")


def _feed(rec: repdiag.Recorder, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    with torch.no_grad():
        for i in range(0, x.shape[0], BATCH):
            model(x[i:i + BATCH])
            rec.step(labels=y[i:i + BATCH])


def _dump(rec: repdiag.Recorder) -> dict[str, Any]:
    data = rec.layer_data()
    return {"table": rec.table(), "samples": {d.layer: (d.samples.clone(), d.labels.clone()) for d in data},
            "stats": {d.layer: {k: getattr(d.stats, k) for k in ("mean", "m2", "min", "max", "zeros", "samples")}
                      for d in data}}


def _worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    res: dict[str, Any] = {}
    try:
        register_metric(PROBE, needs=("samples", "labels"))(_class_spread)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                                timeout=datetime.timedelta(seconds=20))
        x, y = _data()
        half = slice(rank * N // 2, (rank + 1) * N // 2)
        metrics = [*STREAMING, PROBE]
        for name, opts in (("all", {"max_samples": FULL}), ("rank0", {"max_samples": FULL, "distributed": "rank0"}),
                           ("sub", {"max_samples": 50})):
            model = _model()
            with repdiag.attach(model, metrics=metrics, **opts) as rec:
                _feed(rec, model, x[half], y[half])
                res[name] = _dump(rec)
        # a rank with a different layer set: both ranks raise, naming the layer
        model = _model()
        layers = ["2", "5", "9", "14"] if rank == 0 else ["2", "5", "9"]
        with repdiag.attach(model, layers, metrics=STREAMING, distributed_timeout=TIMEOUT_S) as rec:
            _feed(rec, model, x[half], y[half])
            t0 = time.monotonic()
            try:
                rec.table()
                res["mismatch"] = ("no error", time.monotonic() - t0)
            except DistributedError as exc:
                res["mismatch"] = (str(exc), time.monotonic() - t0)
        # a rank that never calls table(): the other raises within the timeout
        flag = Path(out) / "rank0-done"
        if rank == 0:
            with repdiag.attach(model, metrics=STREAMING, distributed_timeout=TIMEOUT_S) as rec:
                _feed(rec, model, x[half], y[half])
                t0 = time.monotonic()
                try:
                    rec.table()
                    res["absent"] = ("no error", time.monotonic() - t0)
                except DistributedError as exc:
                    res["absent"] = (str(exc), time.monotonic() - t0)
            flag.touch()
        else:
            deadline = time.monotonic() + 30
            while not flag.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the test with it
        res["error"] = traceback.format_exc()
    torch.save(res, os.path.join(out, f"rank{rank}.pt"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("dist")
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, str(out))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive, "a rank hung: the distributed test workers did not finish within 120 s"
    results = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for r, res in enumerate(results):
        assert "error" not in res, f"rank {r} failed:\n{res['error']}"
    return results


@pytest.fixture(scope="module")
def single() -> dict[str, Any]:
    """One process fed all the data, in rank order (rank 0's half, then rank 1's)."""
    register_metric(PROBE, needs=("samples", "labels"))(_class_spread)
    try:
        x, y = _data()
        model = _model()
        with repdiag.attach(model, metrics=[*STREAMING, PROBE], max_samples=FULL) as rec:
            _feed(rec, model, x, y)
            return _dump(rec)
    finally:
        unregister_metric(PROBE)


def _values(table: pd.DataFrame, metrics: list[str]) -> pd.Series:
    t = table[table["metric"].isin(metrics)]
    return t.set_index(["layer", "metric"])["value"].sort_index()


def _n(table: pd.DataFrame) -> pd.Series:
    return table.set_index(["layer", "metric"])["n"].sort_index().astype("int64")


@pytest.mark.parametrize("rank", [0, 1])
def test_streaming_metrics_equal_one_process_fed_everything(ranks: list[dict[str, Any]], single: dict[str, Any],
                                                            rank: int) -> None:
    got, want = _values(ranks[rank]["all"]["table"], STREAMING), _values(single["table"], STREAMING)
    assert list(got.index) == list(want.index) and len(got) == 4 * len(STREAMING)
    torch.testing.assert_close(torch.tensor(got.to_numpy()), torch.tensor(want.to_numpy()), rtol=1e-6, atol=1e-6)
    pd.testing.assert_series_equal(_n(ranks[rank]["all"]["table"]), _n(single["table"]))
    for layer, st in single["stats"].items():
        mine = ranks[rank]["all"]["stats"][layer]
        assert mine["samples"] == st["samples"] == N
        for k in ("mean", "m2", "min", "max", "zeros"):
            torch.testing.assert_close(mine[k], st[k], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("rank", [0, 1])
def test_reservoir_metrics_exactly_equal_when_the_buffer_covers_every_sample(
        ranks: list[dict[str, Any]], single: dict[str, Any], rank: int) -> None:
    got, want = _values(ranks[rank]["all"]["table"], [PROBE]), _values(single["table"], [PROBE])
    assert len(got) == 4
    torch.testing.assert_close(torch.tensor(got.to_numpy()), torch.tensor(want.to_numpy()), rtol=0, atol=0)
    for layer, (x, y) in single["samples"].items():
        gx, gy = ranks[rank]["all"]["samples"][layer]
        assert gx.shape == (N, x.shape[1])
        torch.testing.assert_close(gx, x, rtol=0, atol=0)
        torch.testing.assert_close(gy, y, rtol=0, atol=0)


def test_rank0_mode_gathers_on_rank_0_only(ranks: list[dict[str, Any]], single: dict[str, Any]) -> None:
    metrics = [*STREAMING, PROBE]
    got, want = _values(ranks[0]["rank0"]["table"], metrics), _values(single["table"], metrics)
    torch.testing.assert_close(torch.tensor(got.to_numpy()), torch.tensor(want.to_numpy()), rtol=1e-6, atol=1e-6)
    assert len(ranks[1]["rank0"]["table"]) == 0 and ranks[1]["rank0"]["samples"] == {}


def test_subsampled_merge_is_a_sample_of_the_union_shared_by_all_ranks(
        ranks: list[dict[str, Any]], single: dict[str, Any]) -> None:
    for layer, (x_all, y_all) in single["samples"].items():
        x0, y0 = ranks[0]["sub"]["samples"][layer]
        x1, y1 = ranks[1]["sub"]["samples"][layer]
        assert x0.shape == (50, x_all.shape[1])
        torch.testing.assert_close(x0, x1, rtol=0, atol=0)  # dst="all": every rank holds the same sample
        torch.testing.assert_close(y0, y1, rtol=0, atol=0)
        match = (x0[:, None, :] == x_all[None, :, :]).all(-1)  # (50, N): which union row each kept row is
        assert bool((match.sum(1) == 1).all()), "every merged row must be one row of the union"
        idx = match.float().argmax(1)
        assert idx.unique().numel() == 50, "rows are drawn without replacement"
        torch.testing.assert_close(y0, y_all[idx], rtol=0, atol=0)  # labels stay with their rows
        assert 0 < int((idx < N // 2).sum()) < 50, "both ranks contribute"
    # streaming statistics do not depend on max_samples
    torch.testing.assert_close(torch.tensor(_values(ranks[0]["sub"]["table"], STREAMING).to_numpy()),
                               torch.tensor(_values(single["table"], STREAMING).to_numpy()), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("rank", [0, 1])
def test_different_layer_sets_make_every_rank_raise(ranks: list[dict[str, Any]], rank: int) -> None:
    message, elapsed = ranks[rank]["mismatch"]
    assert "different layer sets" in message and "rank 1 lacks ['14']" in message, message
    assert elapsed < 20.0


def test_a_rank_that_never_arrives_makes_the_other_raise_within_the_timeout(ranks: list[dict[str, Any]]) -> None:
    message, elapsed = ranks[0]["absent"]
    assert message.startswith("repdiag's monitored barrier across ranks failed"), message
    assert elapsed < TIMEOUT_S + 10.0, f"took {elapsed:.1f} s with a {TIMEOUT_S} s timeout"


# -- merge without a process group --------------------------------------------------------------------------


def _reservoir_of(ids: torch.Tensor, capacity: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    if ids.numel() == 0:
        return torch.zeros(0, 1, dtype=torch.float64), torch.zeros(0, dtype=torch.long), 0
    r = Reservoir(capacity, seed)
    for i in range(0, ids.shape[0], 7):
        r.offer(ids[i:i + 7, None].double())
    x, _ = r.rows()
    return x.clone(), x[:, 0].long(), ids.shape[0]


def test_merged_reservoirs_include_every_row_with_equal_probability() -> None:
    seen, cap, trials = (20, 10, 0), 8, 1500
    ids = torch.arange(sum(seen))
    counts = torch.zeros(sum(seen))
    for t in range(trials):
        parts, start = [], 0
        for r, n in enumerate(seen):
            parts.append(_reservoir_of(ids[start:start + n], cap, seed=1000 * t + r))
            start += n
        x, y = merge_reservoirs(parts, cap, seed=t)
        assert x.shape == (cap, 1) and y.unique().numel() == cap
        counts[y] += 1
    freq = counts / trials  # each of the 30 rows: inclusion probability cap / 30
    torch.testing.assert_close(freq, torch.full_like(freq, cap / sum(seen)), rtol=0, atol=0.05)


def test_merge_of_reservoirs_that_cover_everything_is_the_union_in_rank_order() -> None:
    a, b = torch.arange(5.0)[:, None], torch.arange(5.0, 8.0)[:, None]
    la, lb = torch.zeros(5, dtype=torch.long), torch.ones(3, dtype=torch.long)
    x, y = merge_reservoirs([(a, la, 5), (b, lb, 3), (a[:0], la[:0], 0)], capacity=8, seed=3)
    torch.testing.assert_close(x, torch.arange(8.0)[:, None], rtol=0, atol=0)
    torch.testing.assert_close(y, torch.tensor([0, 0, 0, 0, 0, 1, 1, 1]), rtol=0, atol=0)


def test_merge_rejects_a_reservoir_of_the_wrong_size() -> None:
    with pytest.raises(ConfigError, match="must hold 4"):
        merge_reservoirs([(torch.zeros(3, 1), torch.zeros(3, dtype=torch.long), 10)], capacity=4)


def test_distributed_option_is_validated_and_inert_without_a_process_group() -> None:
    model = _model()
    with pytest.raises(ConfigError, match="distributed must be"):
        repdiag.attach(model, distributed="everyone")
    x, y = _data()
    tables = []
    for opt in (True, False, "rank0"):
        with repdiag.attach(model, metrics=STREAMING, distributed=opt) as rec:
            _feed(rec, model, x[:40], y[:40])
            tables.append(rec.table())
    pd.testing.assert_frame_equal(tables[0], tables[1])
    pd.testing.assert_frame_equal(tables[0], tables[2])
