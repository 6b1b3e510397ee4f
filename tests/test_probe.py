"""The EM-shift probe (attach(..., probe=x)) and the w1_drift metric."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import repdiag
from repdiag import ConfigError, LayerNotFoundError, RepdiagError, RepdiagWarning
from repdiag.functional import coupling_bound, emd, first_moment_bound, sliced_wasserstein, wasserstein_1d
from repdiag.metrics._plugin_transport import reset_drift_reference
from repdiag.models import mlp, small_cnn

from .conftest import DEVICES


def _model(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "cnn_bn_dropout":
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.3),
                             nn.Flatten(), nn.Linear(4 * 64, 10))
    if kind == "unitized_mlp":
        return mlp("unitized", depth=2, width=16)
    return small_cnn("bn", width=4)


def _x(kind: str, n: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    return torch.randn(n, 64, generator=g) if kind == "unitized_mlp" else torch.randn(n, 1, 8, 8, generator=g)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict(keep_vars=False).items()}


@pytest.mark.parametrize("kind", ["cnn_bn_dropout", "unitized_mlp", "small_cnn"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_probe_leaves_model_bitwise(kind: str, train: bool) -> None:
    model = _model(kind).train(train)
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.25)
    before = _state(model)
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    modes = [m.training for m in model.modules()]
    torch.manual_seed(77)
    rng = torch.get_rng_state()
    rec = repdiag.attach(model, probe=_x(kind), metrics=None, max_samples=8)
    for _ in range(3):
        rec.step()  # a probe pass on every step, no training in between
    assert torch.equal(torch.get_rng_state(), rng)
    after = _state(model)
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k  # parameters and buffers (BN running stats, counters)
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, grads[n]), n
    assert [m.training for m in model.modules()] == modes
    for layer in rec.layers:  # the recorder's own hooks did not see the probe passes
        assert rec.stats(layer) is None
    rows = rec.table()
    if train:  # same weights, same probe, dropout masks from a fixed seed: no shift at all
        assert len(rows) and (rows["value"] == 0).all()
    rec.detach()


def test_probe_rows_match_kernels_on_recorded_outputs() -> None:
    model = mlp("bn", depth=2, width=16)
    x = _x("unitized_mlp", 48)
    rec = repdiag.attach(model, layers=["2", "5"], probe=x, metrics=None, probe_options={"exact_max": 64})
    outs: dict[str, list[torch.Tensor]] = {"2": [], "5": []}

    def grab(name: str):  # the probe's own view: BN in train mode on the probe batch
        def hook(m: nn.Module, a: object, out: torch.Tensor) -> None:
            outs[name].append(out.detach().clone())
        return hook

    def reference_outputs() -> None:
        snap = copy.deepcopy(model)
        hs = [dict(snap.named_modules())[n].register_forward_hook(grab(n)) for n in outs]
        with torch.no_grad():
            snap(x)
        for h in hs:
            h.remove()

    reference_outputs()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    nn.functional.cross_entropy(model(x), torch.arange(48) % 10).backward()
    opt.step()
    reference_outputs()
    rec.step()
    table = rec.table()
    assert set(table["scale"]) == {"raw", "normalized"}
    for name, (y0, y1) in outs.items():
        t = table[(table["layer"] == name) & (table["scale"] == "raw")].set_index("metric")["value"]
        want = {
            "w1_shift_unit": wasserstein_1d(y0, y1).mean(),
            "w1_shift_sliced": sliced_wasserstein(y0, y1, 128, seed=0),
            "w1_shift": emd(y0, y1),
            "w1_shift_upper": coupling_bound(y0, y1),
            "w1_shift_lower": first_moment_bound(y0, y1),
        }
        assert set(t.index) == set(want)
        for metric, value in want.items():
            assert_close(torch.tensor(t[metric]), value.double(), rtol=1e-5, atol=1e-7)
        assert t["w1_shift_lower"] <= t["w1_shift"] + 1e-6 <= t["w1_shift_upper"] + 2e-6
        scale = 0.5 * (y0.norm(dim=1).mean() + y1.norm(dim=1).mean())
        norm = table[(table["layer"] == name) & (table["scale"] == "normalized")].set_index("metric")["value"]
        assert_close(torch.tensor(norm["w1_shift_upper"]), (want["w1_shift_upper"] / scale).double(), rtol=1e-5,
                     atol=1e-7)
        assert (table[table["layer"] == name]["n"] == 48).all()
    rec.detach()


def test_probe_every_and_exact_limit_and_conv_reduce() -> None:
    model = small_cnn("bn", width=4)
    rec = repdiag.attach(model, probe=_x("small_cnn", 20), probe_every=2, metrics=None, reduce="positions",
                         probe_options={"exact_max": 10, "estimators": ["unit", "exact", "upper"]})
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(4):
        opt.zero_grad()
        model(_x("small_cnn", 8)).sum().backward()
        opt.step()
        rec.step()
    t = rec.table()
    probe_rows = t[t["metric"].str.startswith("w1_shift")]
    assert sorted(set(probe_rows["step"])) == [2, 4]
    assert set(probe_rows["metric"]) == {"w1_shift_unit", "w1_shift_upper"}  # 20 x 64 position rows > exact_max
    first_conv = probe_rows[probe_rows["layer"] == rec.layers[0]]
    assert (first_conv["n"] == 20 * 64).all()  # reduce="positions": each position of each input is a row
    assert (probe_rows["value"] > 0).all()


def test_probe_bad_options() -> None:
    model = mlp("bn", depth=1, width=8)
    with pytest.raises(ConfigError, match="probe="):
        repdiag.attach(model, probe_every=2)
    with pytest.raises(ConfigError, match="unknown probe_options"):
        repdiag.attach(model, probe=torch.randn(4, 64), probe_options={"exact": 3})
    with pytest.raises(LayerNotFoundError, match="not recorded"):
        repdiag.attach(model, probe=torch.randn(4, 64), probe_options={"layers": ["0"]})
    with pytest.raises(RepdiagError, match="probe batch could not pass"):
        repdiag.attach(model, probe=torch.randn(4, 3))
    assert not any(h for m in model.modules() for h in m._forward_hooks.values())  # attach cleaned up


def test_probe_diverged_outputs_warn_nan() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    rec = repdiag.attach(model, probe=torch.randn(6, 3), metrics=None)
    with torch.no_grad():
        model[0].weight.fill_(float("inf"))
    with pytest.warns(RepdiagWarning, match="NaN or Inf"):
        rec.step()
    t = rec.table()
    assert t["value"].isna().all() and len(t)


@pytest.mark.parametrize("device", DEVICES)
def test_w1_drift_against_first_reference(device: str) -> None:
    reset_drift_reference()
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU()).to(device)
    rec = repdiag.attach(model, metrics=["w1_drift"], snapshot_every=1, max_samples=64)
    g = torch.Generator().manual_seed(0)
    first = torch.randn(40, 5, generator=g).to(device)
    model(first)
    rec.step()
    later = (torch.randn(40, 5, generator=g) + 2).to(device)
    model(later)
    rec.step()
    t = rec.table()
    assert (t[t["step"] == 1]["value"] == 0).all()
    second = t[(t["step"] == 2) & (t["scale"] == "raw")].set_index("metric")["value"]
    with torch.no_grad():
        a, b = model(later), model(first)
    assert_close(torch.tensor(second["w1_drift_unit"]), wasserstein_1d(a, b).mean().double().cpu())
    assert_close(torch.tensor(second["w1_drift"]), emd(a, b).double().cpu())
    assert_close(torch.tensor(second["w1_drift_lower"]), first_moment_bound(a, b).double().cpu())
    rec.detach()


def test_w1_drift_explicit_reference_and_errors() -> None:
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU())
    ref = torch.rand(30, 6)
    rec = repdiag.attach(model, metrics=["w1_drift"], metric_options={"w1_drift": {"reference": {"1": ref},
                                                                                 "exact_max": 10}})
    x = torch.randn(20, 5)
    model(x)
    t = rec.table().set_index(["metric", "scale"])["value"]
    assert ("w1_drift", "raw") not in t.index  # 30 reference rows > exact_max
    with torch.no_grad():
        assert_close(torch.tensor(t[("w1_drift_sliced", "raw")]), sliced_wasserstein(model(x), ref).double())
    bad = repdiag.attach(model, metrics=["w1_drift"], metric_options={"w1_drift": {"reference": "last"}})
    model(x)
    with pytest.raises(ConfigError, match="'first' or a mapping"):
        bad.table()
    rec.detach(), bad.detach()
