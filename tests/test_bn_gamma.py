"""gamma_table: exact fractions on a hand-set model, the reference column, quantiles against
torch/numpy, which layers count, validation; and the gamma / channels_off metric plugins."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import repdiag
from repdiag.bn import gamma_table, norm_layers


def hand_model() -> nn.Module:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4, 5), nn.LayerNorm(5), nn.Linear(5, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.0, -0.0005, 0.02, -0.5]))
        model[1].bias.copy_(torch.tensor([1.0, -1.0, 2.0, 0.0]))
        model[5].weight.copy_(torch.tensor([0.009, -0.09, 0.2, 0.04, 3.0]))
    return model


def cell(t, layer, metric, **params):
    sub = t[(t.layer == layer) & (t.metric == metric)]
    for k, v in params.items():
        sub = sub[sub[k] == v]
    assert len(sub) == 1, (layer, metric, params, len(sub))
    return float(sub.value.iloc[0])


def test_exact_fractions_on_hand_set_model():
    t = gamma_table(hand_model())
    repdiag.tables.validate_table(t)
    expected_bn = {1e-3: 2 / 4, 1e-2: 2 / 4, 5e-2: 3 / 4, 1e-1: 3 / 4}
    expected_ln = {1e-3: 0 / 5, 1e-2: 1 / 5, 5e-2: 2 / 5, 1e-1: 3 / 5}
    for tau in expected_bn:
        assert cell(t, "1", "gamma_below", threshold=tau) == expected_bn[tau]
        assert cell(t, "5", "gamma_below", threshold=tau) == expected_ln[tau]
    assert t[t.layer == "1"].n.unique().tolist() == [4]
    assert t[t.layer == "5"].module.unique().tolist() == ["LayerNorm"]
    assert t[t.layer == "5"].depth.unique().tolist() == [1]
    assert "gamma_below_ref" not in set(t.metric)


def test_statistics_match_torch_and_numpy():
    model = hand_model()
    t = gamma_table(model, quantiles=(0.0, 0.3, 1.0))
    for layer, mod in [("1", model[1]), ("5", model[5])]:
        for label, p in (("gamma", mod.weight), ("beta", mod.bias)):
            v = p.detach().double().numpy()
            assert cell(t, layer, f"{label}_mean") == pytest.approx(v.mean(), abs=1e-15)
            assert cell(t, layer, f"{label}_std") == pytest.approx(v.std(), abs=1e-15)
            got = [cell(t, layer, f"{label}_quantile", quantile=q) for q in (0.0, 0.3, 1.0)]
            torch.testing.assert_close(torch.tensor(got, dtype=torch.float64),
                                       torch.from_numpy(np.quantile(v, [0.0, 0.3, 1.0])))


def test_reference_fractions_beside_current():
    model = hand_model()
    init = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        model[1].weight.fill_(0.0)  # training switched every channel off
    t = gamma_table(model, thresholds=(0.01,), reference=init)
    assert cell(t, "1", "gamma_below", threshold=0.01) == 1.0
    assert cell(t, "1", "gamma_below_ref", threshold=0.01) == 0.5
    t2 = gamma_table(model, thresholds=(0.01,), reference=hand_model())  # a module works too
    assert cell(t2, "5", "gamma_below_ref", threshold=0.01) == 0.2


def test_which_layers_count():
    model = nn.Sequential(nn.BatchNorm1d(3, affine=False), nn.LayerNorm(3, elementwise_affine=False),
                          nn.GroupNorm(1, 3), nn.InstanceNorm1d(3, affine=True), nn.LayerNorm(3, bias=False),
                          nn.Linear(3, 3))
    assert [n for n, _ in norm_layers(model)] == ["2", "3", "4"]
    with pytest.warns(repdiag.RepdiagWarning, match="without affine parameters"):
        t = gamma_table(model)
    assert "beta_mean" not in set(t[t.layer == "4"].metric) and "beta_mean" in set(t[t.layer == "2"].metric)
    assert len(gamma_table(nn.Sequential(nn.Linear(2, 2)))) == 0


@pytest.mark.parametrize("kwargs,error,match", [
    ({"thresholds": (0.0,)}, repdiag.ConfigError, "thresholds"),
    ({"thresholds": "a"}, repdiag.ConfigError, "thresholds"),
    ({"quantiles": (1.5,)}, repdiag.ConfigError, "quantiles"),
    ({"reference": {"1.weight": torch.ones(3)}}, repdiag.ShapeError, "shape"),
    ({"reference": {}}, repdiag.CheckpointError, "lacks '1.weight'"),
    ({"reference": [1, 2]}, repdiag.ConfigError, "state dict"),
])
def test_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        gamma_table(hand_model(), **kwargs)


def test_gamma_plugin_in_recorder_table():
    model = hand_model()
    rec = repdiag.attach(model, metrics=["gamma"], metric_options={"gamma": {"thresholds": (0.01,)}}, run="r")
    model(torch.randn(3, 1, 3, 3))
    rec.step()
    t = rec.table()
    rec.detach()
    assert cell(t, "1", "gamma_below", threshold=0.01) == 0.5
    assert set(t.layer) == {"1", "5"} and (t.run == "r").all()
    assert "gamma" in repdiag.metrics.default_metrics() and "channels_off" in repdiag.metrics.default_metrics()


class Fixed(nn.Module):
    """Outputs channels with known zero fractions: channel c is zero on a fixed share of entries."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        out = torch.ones(n, 4, 10, 10)
        out[:, 0] = 0.0  # always off
        out[:, 1].view(n, -1)[:, :99] = 0.0  # 99% zero: off at the 0.99 threshold
        out[:, 2].view(n, -1)[:, :98] = 0.0  # 98%: on at 0.99, off at 0.95
        return out  # channel 3 never zero


@pytest.mark.parametrize("threshold,expected", [(0.99, 0.5), (0.95, 0.75), (1.0, 0.25)])
def test_channels_off_from_streaming_counts(threshold, expected):
    model = nn.Sequential(Fixed(), nn.ReLU())
    rec = repdiag.attach(model, layers=["1"], metrics=["channels_off"],
                         metric_options={"channels_off": {"off_threshold": threshold}})
    for _ in range(2):
        model(torch.randn(3, 1))
        rec.step()
    t = rec.table()
    rec.detach()
    assert cell(t, "1", "channels_off") == expected
    assert t.threshold.tolist() == [threshold] and t.n.tolist() == [6]


def test_channels_off_bad_threshold():
    model = nn.Sequential(Fixed(), nn.ReLU())
    rec = repdiag.attach(model, layers=["1"], metrics=["channels_off"],
                         metric_options={"channels_off": {"off_threshold": 0.0}})
    model(torch.randn(2, 1))
    with pytest.raises(repdiag.ConfigError, match=r"off_threshold must be a number in \(0, 1\]"):
        rec.table()
    rec.detach()
