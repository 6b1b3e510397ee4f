"""compare aligns layers across runs by default: by name where the names agree, else by role and
forward order (BN vs no-BN Sequential nets shift the module indices)."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest
import torch
from torch import nn

import repdiag
from repdiag import RepdiagWarning
from repdiag.tables import make_table


def mlp(bn: bool, dropout_at: int | None = None) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = 8
    for i in range(3):
        layers.append(nn.Linear(d, 16))
        d = 16
        if bn:
            layers.append(nn.BatchNorm1d(16))
        layers.append(nn.ReLU())
        if dropout_at == i:
            layers.append(nn.Dropout(0.0))
    layers.append(nn.Linear(16, 3))
    return nn.Sequential(*layers)


def cnn(bn: bool) -> nn.Sequential:
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), *([nn.BatchNorm2d(cout)] if bn else []), nn.ReLU()]

    return nn.Sequential(*block(1, 4), *block(4, 8), nn.MaxPool2d(2), *block(8, 8), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 3))


def record(model: nn.Module, run: str, shape: tuple[int, ...], metrics: object = "default") -> pd.DataFrame:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    with repdiag.attach(model, run=run, metrics=metrics) as rec:  # type: ignore[arg-type]
        for _ in range(2):
            model(torch.randn(*shape, generator=g))
            rec.step(labels=torch.randint(0, 3, (shape[0],), generator=g))
        return rec.table()


def both(wide: pd.DataFrame) -> pd.DataFrame:
    return wide[wide.notna().all(axis=1)]


@pytest.mark.parametrize("arch, shape", [(mlp, (48, 8)), (cnn, (24, 1, 8, 8))], ids=["mlp", "cnn"])
def test_bn_and_plain_sequential_align_by_default(arch, shape) -> None:
    torch.manual_seed(0)
    t_bn, t_plain = record(arch(True), "bn", shape), record(arch(False), "nobn", shape)
    assert set(t_bn.layer) & set(t_plain.layer) != set(t_bn.layer)  # the indices are shifted
    with pytest.warns(RepdiagWarning, match="name their layers differently") as caught:
        wide = repdiag.compare([t_bn, t_plain])
    assert len(caught) == 1  # one warning, and not the "fewer than half" one
    assert wide.attrs["aligned_by"] == "order"
    act = wide[wide.index.get_level_values("layer").isin(t_bn.loc[t_bn.module == "ReLU", "layer"])]
    assert len(act) and act.notna().all(axis=None)  # every activation row holds both runs
    # the k-th ReLU of one run is paired with the k-th ReLU of the other, values untouched
    relus_bn = t_bn[t_bn.module == "ReLU"].drop_duplicates("layer").sort_values("depth").layer.tolist()
    relus_plain = t_plain[t_plain.module == "ReLU"].drop_duplicates("layer").sort_values("depth").layer.tolist()
    assert len(relus_bn) == len(relus_plain) == 3
    for lb, lp in zip(relus_bn, relus_plain):
        exp = t_plain[(t_plain.layer == lp) & (t_plain.metric == "sparsity")].value.iloc[-1]
        got = wide.xs((lb, "sparsity"), level=("layer", "metric"))["nobn"].iloc[0]
        assert got == exp
    al = wide.attrs["alignment"]
    assert al[al.run == "nobn"].key.tolist() == relus_bn
    assert set(al[al.run == "bn"].role) == {"activation", "norm"}
    # gamma rows belong to BN layers only: they hold the BN run alone, and nothing else is unpaired
    single = wide[wide.notna().sum(axis=1) == 1]
    assert set(single.index.get_level_values("layer")) <= set(t_bn.loc[t_bn.module.str.contains("Norm"), "layer"])


def test_same_names_align_by_name_without_warning() -> None:
    t1, t2 = record(mlp(True), "a", (48, 8)), record(mlp(True), "b", (48, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wide = repdiag.compare([t1, t2])
    assert wide.attrs["aligned_by"] == "name"
    assert wide.notna().all(axis=None)


def test_bn_layers_pair_with_bn_layers_when_indices_shift() -> None:
    """A Dropout inserted in one run shifts the later indices; norm rows still pair norm with norm."""
    t1, t2 = record(mlp(True), "a", (48, 8)), record(mlp(True, dropout_at=0), "b", (48, 8))
    with pytest.warns(RepdiagWarning, match="differently"):
        wide = repdiag.compare([t1, t2])
    gamma = wide.xs("gamma_mean", level="metric")
    assert len(gamma) == 3 and gamma.notna().all(axis=None)
    assert gamma.index.get_level_values("layer").tolist() == ["1", "4", "7"]  # the first run's names


def test_warns_and_says_what_to_pass_when_few_rows_pair() -> None:
    t_bn, t_plain = record(mlp(True), "bn", (48, 8), ["sparsity"]), record(mlp(False), "nobn", (48, 8), ["sparsity"])
    with pytest.warns(RepdiagWarning, match=r"only 1 of 5 rows .* by name; .* Pass match=.order."):
        wide = repdiag.compare([t_bn, t_plain], match="name")
    assert (wide.notna().sum(axis=1) >= 2).sum() == 1  # "5" is a ReLU in both nets, by chance


def test_align_layers_by_role_and_order_on_hand_made_tables() -> None:
    def row(run: str, layer: str, module: str, depth: int, value: float) -> dict[str, object]:
        return {"run": run, "layer": layer, "module": module, "depth": depth, "metric": "m", "value": value}

    a = make_table([row("a", "conv1", "Conv2d", 0, 1.0), row("a", "bn1", "BatchNorm2d", 1, 2.0),
                    row("a", "relu1", "ReLU", 2, 3.0), row("a", "relu2", "ReLU", 3, 4.0)])
    b = make_table([row("b", "c", "Conv2d", 0, 10.0), row("b", "r1", "ReLU", 1, 30.0), row("b", "r2", "ReLU", 2, 40.0)])
    al = repdiag.tables.align_layers([a, b])
    assert dict(zip(al.loc[al.run == "b", "layer"], al.loc[al.run == "b", "key"])) == {
        "c": "conv1", "r1": "relu1", "r2": "relu2"}
    assert al.how.unique().tolist() == ["order"]
    with pytest.warns(RepdiagWarning, match="differently"):
        wide = repdiag.compare([a, b])
    assert wide["b"].xs("relu2", level="layer").iloc[0] == 40.0
    assert wide.loc[("bn1", 1, "m"), "b"] != wide.loc[("bn1", 1, "m"), "b"]  # NaN: b has no norm layer
    with pytest.raises(repdiag.ConfigError, match="match must be one of"):
        repdiag.compare([a, b], match="fuzzy")  # type: ignore[arg-type]
