"""The Lightning callback on a tiny LightningModule: attach, step with labels, log, detach."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

lightning = pytest.importorskip("lightning", reason="the Lightning callback needs the optional 'lightning' package")
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

from repdiag import ConfigError  # noqa: E402
from repdiag.integrations.lightning import RepdiagCallback, batch_labels  # noqa: E402
from repdiag.metrics import LayerData, register_metric, unregister_metric  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning:lightning"),
              pytest.mark.filterwarnings("ignore:.*LeafSpec.*")]
STATS = ["sparsity", "mean", "std"]
LABELLED = "t_lightning_labelled"  # counts buffered rows that carry a label


class Tiny(lightning.LightningModule):
    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
        self.fail_at = fail_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.fail_at is not None and self.global_step == self.fail_at:
            raise RuntimeError("boom")
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loaders() -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 6, generator=g), torch.randint(0, 3, (40,), generator=g)
    train = DataLoader(TensorDataset(x[:32], y[:32]), batch_size=8)
    val = DataLoader(TensorDataset(x[32:], y[32:]), batch_size=5)  # another size: recording it would fail
    return train, val


def _trainer(tmp_path: Path, cb: RepdiagCallback, **kw: Any) -> Any:
    return lightning.Trainer(default_root_dir=tmp_path, logger=CSVLogger(tmp_path), callbacks=[cb],
                             accelerator="cpu", devices=1, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, log_every_n_steps=1, **kw)


def _labelled(data: LayerData) -> Iterator[dict[str, Any]]:
    yield {"value": float((data.labels >= 0).sum()), "n": int(data.samples.shape[0])}


@pytest.fixture
def labelled_metric() -> Iterator[str]:
    register_metric(LABELLED, needs=("samples",))(_labelled)
    yield LABELLED
    unregister_metric(LABELLED)


@pytest.mark.slow
def test_callback_records_logs_and_detaches(tmp_path: Path, labelled_metric: str) -> None:
    module = Tiny()
    cb = RepdiagCallback(metrics=[*STATS, labelled_metric], run="tiny", max_samples=100)
    train, val = _loaders()
    _trainer(tmp_path, cb, max_epochs=2).fit(module, train, val)
    table = cb.table
    assert cb.recorder is None
    assert all(not m._forward_hooks for m in module.modules()), "hooks must be gone after fit"
    assert set(table["layer"]) == {"net.1", "net.3"} and set(table["run"]) == {"tiny"}
    assert sorted(set(table["step"])) == [4, 8]  # one snapshot per epoch, at the step count
    assert set(table["n"]) == {32}  # each value describes one epoch's 32 training samples
    lab = table[table["metric"] == labelled_metric]
    assert list(lab["value"]) == [32.0] * 4  # every buffered row got its batch's label
    with open(Path(cb_log_dir(tmp_path)) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for _, r in table.iterrows():
        col = f"repdiag/{r['layer']}/{r['metric']}"
        logged = [float(x[col]) for x in rows if x.get(col) and int(x["step"]) == int(r["step"])]
        assert len(logged) == 1, col
        torch.testing.assert_close(torch.tensor(logged[0], dtype=torch.float64),
                                   torch.tensor(r["value"], dtype=torch.float64), rtol=1e-12, atol=1e-12)


def cb_log_dir(tmp_path: Path) -> Path:
    (d,) = (tmp_path / "lightning_logs").iterdir()
    return d


@pytest.mark.slow
def test_callback_detaches_when_training_fails(tmp_path: Path) -> None:
    module = Tiny(fail_at=2)
    cb = RepdiagCallback(metrics=STATS, log_every_n_steps=1)
    train, _ = _loaders()
    with pytest.raises(RuntimeError, match="boom"):
        _trainer(tmp_path, cb, max_epochs=1).fit(module, train)
    assert cb.recorder is None
    assert all(not m._forward_hooks for m in module.modules())


def test_batch_labels_and_options() -> None:
    y = torch.tensor([2, 0])
    assert batch_labels((torch.zeros(2, 3), y)) is y
    assert batch_labels({"x": torch.zeros(2, 3), "target": y}) is y
    assert batch_labels((torch.zeros(2, 3), torch.zeros(2))) is None  # float targets are not class labels
    assert batch_labels([y, torch.zeros(2)], 0) is y
    assert batch_labels({"lab": [1, 0]}, lambda b: b["lab"]).tolist() == [1, 0]
    assert batch_labels((torch.zeros(2), y), None) is None
    with pytest.raises(ConfigError, match="does not select anything"):
        batch_labels((torch.zeros(2),), 3)
    with pytest.raises(ConfigError, match="log_every_n_steps must be"):
        RepdiagCallback(log_every_n_steps=0)
    with pytest.raises(ConfigError, match="labels must be"):
        RepdiagCallback(labels=1.5)
