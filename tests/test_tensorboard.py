"""TensorBoard logging: event files read back with EventAccumulator equal the table's values."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("tensorboard", reason="TensorBoard logging needs the optional 'tensorboard' package")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.util import tensor_util  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

import repdiag  # noqa: E402
from repdiag import ConfigError  # noqa: E402
from repdiag.integrations.tensorboard import log_to, row_tag, table_tags  # noqa: E402
from repdiag.models import mlp  # noqa: E402
from repdiag.tables import make_table  # noqa: E402


def _recorded(steps: int = 3) -> repdiag.Recorder:
    torch.manual_seed(0)
    model = mlp()
    rec = repdiag.attach(model, max_samples=64, run="a", metrics=["sparsity", "mean", "std", "dead_units"])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for i in range(steps):
            model(torch.randn(16, 64, generator=g))
            rec.step(labels=torch.randint(0, 10, (16,), generator=g))
            if i < steps - 1:
                rec.snapshot(reset=True)  # rows at steps 1 .. steps-1; table() adds the last
    return rec


def _read(logdir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0, "histograms": 0})
    acc.Reload()
    return acc


def test_scalars_read_back_equal_the_table(tmp_path: Path) -> None:
    rec = _recorded()
    with SummaryWriter(str(tmp_path)) as w:
        table = rec.log_to(w, histograms=True)
    rec.detach()
    assert len(table) > 0 and table["step"].nunique() == 3
    acc = _read(tmp_path)
    tags = table_tags(table)
    assert set(acc.Tags()["scalars"]) == set(tags)
    for tag, (_, r) in zip(tags, table.iterrows()):
        events = {e.step: e.value for e in acc.Scalars(tag)}
        # TensorBoard's scalar events hold float32: the value must be the table's, rounded once
        torch.testing.assert_close(torch.tensor(events[int(r["step"])], dtype=torch.float32),
                                   torch.tensor(r["value"], dtype=torch.float32), rtol=0, atol=0)
    layers = rec.layers
    assert set(acc.Tags()["histograms"]) == {f"{lay}/activations" for lay in layers}
    hist = acc.Histograms(f"{layers[0]}/activations")[-1]
    x, _ = rec.samples(layers[0])
    assert hist.step == rec.step_count and hist.histogram_value.num == x.numel()
    torch.testing.assert_close(torch.tensor(hist.histogram_value.sum, dtype=torch.float64), x.double().sum(), rtol=1e-6, atol=1e-6)


def test_double_precision_values_read_back_exactly(tmp_path: Path) -> None:
    table = make_table([
        {"run": "r", "step": 5, "layer": "fc", "module": "Linear", "depth": 0, "metric": "m", "value": math.pi, "n": 3},
        {"run": "r", "step": 5, "layer": "fc", "module": "Linear", "depth": 0, "metric": "km", "value": 1 / 3,
         "n": 3, "k": 4},
        {"run": "r", "step": None, "layer": "fc", "module": "Linear", "depth": 0, "metric": "km", "value": 0.1,
         "n": 3, "k": 8},
    ])
    with SummaryWriter(str(tmp_path)) as w:
        log_to(table, w, double_precision=True, prefix="rd/")
    acc = _read(tmp_path)
    assert set(acc.Tags()["tensors"]) == {"rd/fc/m", "rd/fc/km/k=4", "rd/fc/km/k=8"}
    for tag, want, step in (("rd/fc/m", math.pi, 5), ("rd/fc/km/k=4", 1 / 3, 5), ("rd/fc/km/k=8", 0.1, 0)):
        (ev,) = acc.Tensors(tag)
        assert ev.step == step
        got = tensor_util.make_ndarray(ev.tensor_proto)
        torch.testing.assert_close(torch.from_numpy(np.asarray(got, dtype=np.float64)),
                                   torch.tensor(want, dtype=torch.float64), rtol=0, atol=0)


def test_tags_name_layer_metric_parameters_and_runs_when_several() -> None:
    assert row_tag({"layer": "l", "metric": "m", "run": "a", "t": 0.5}, ["t"], run=True) == "a/l/m/t=0.5"
    rows = [{"run": run, "layer": "l", "metric": "m", "value": 1.0} for run in ("a", "b")]
    assert table_tags(make_table(rows)) == ["a/l/m", "b/l/m"]
    assert table_tags(make_table(rows[:1])) == ["l/m"]


def test_bad_input_gets_a_clear_error(tmp_path: Path) -> None:
    table = make_table([{"layer": "l", "metric": "m", "value": 1.0}])
    with SummaryWriter(str(tmp_path)) as w:
        with pytest.raises(ConfigError, match="histograms=True needs the recorder"):
            log_to(table, w, histograms=True)
        with pytest.raises(ConfigError, match="source must be a repdiag Recorder"):
            log_to({"value": 1.0}, w)
    with pytest.raises(ConfigError, match="writer must have add_scalar"):
        log_to(table, object())
    with pytest.raises(repdiag.tables.TableError):
        log_to(pd.DataFrame({"x": [1]}), None)
