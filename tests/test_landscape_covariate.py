"""covariate_shift (Santurkar's G vs G'): exact on one layer, hand computation on a two-layer
linear model, the optimizer's real step (momentum, Adam) against a naive version, validation."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import repdiag
from repdiag.landscape import covariate_shift

from .conftest import DEVICES


def sq_loss(out, target):
    return 0.5 * ((out - target) ** 2).sum()


def pick(t, layer, metric):
    sub = t[(t.layer == layer) & (t.metric == metric)]
    assert len(sub) == 1
    return torch.tensor(float(sub.value.iloc[0]), dtype=torch.float64)


def metrics_from(g, g2):
    g, g2 = g.flatten().double(), g2.flatten().double()
    d = (g - g2).norm()
    return d, (g @ g2) / (g.norm() * g2.norm()), d / g.norm()


@pytest.mark.parametrize("device", DEVICES)
def test_one_layer_G_equals_G_prime_exactly(device):
    torch.manual_seed(0)
    model = nn.Linear(5, 3).to(device)
    batch = (torch.randn(16, 5, device=device), torch.randint(0, 3, (16,), device=device))
    t = covariate_shift(model, nn.CrossEntropyLoss(), batch, lr=0.5)
    assert set(t.layer) == {""}  # the root module owns the parameters
    assert pick(t, "", "ics_l2").item() == 0.0
    assert pick(t, "", "ics_rel").item() == 0.0
    assert pick(t, "", "ics_cos").item() == 1.0


def two_layer(dtype=torch.float64):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Linear(4, 2, bias=False)).to(dtype)
    x, t = torch.randn(7, 3, dtype=dtype), torch.randn(7, 2, dtype=dtype)
    return model, x, t


def hand_grads(w1, w2, x, t):
    r = x @ w1.T @ w2.T - t
    return (r @ w2).T @ x, r.T @ (x @ w1.T)  # dL/dW1, dL/dW2


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_two_layer_linear_hand_computation(dtype):
    model, x, t = two_layer(dtype)
    lr = 0.05
    w1, w2 = model[0].weight.detach().double(), model[1].weight.detach().double()
    g1, g2 = hand_grads(w1, w2, x.double(), t.double())
    _, g2_prime = hand_grads(w1 - lr * g1, w2, x.double(), t.double())
    table = covariate_shift(model, sq_loss, (x, t), lr=lr)
    tol = dict(rtol=1e-9, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    for metric, expected in zip(("ics_l2", "ics_cos", "ics_rel"), metrics_from(g2, g2_prime)):
        torch.testing.assert_close(pick(table, "1", metric), expected, **tol)
    assert pick(table, "0", "ics_l2").item() == 0.0
    assert table[table.layer == "1"].depth.unique().tolist() == [1]
    assert table.module.unique().tolist() == ["Linear"]


def test_sgd_momentum_state_is_used_hand_computation():
    model, x, t = two_layer()
    opt = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, weight_decay=0.01)
    for _ in range(3):  # build momentum state
        opt.zero_grad()
        sq_loss(model(x), t).backward()
        opt.step()
    buf = opt.state[model[0].weight]["momentum_buffer"].clone()
    w1, w2 = model[0].weight.detach().clone(), model[1].weight.detach().clone()
    g1, g2 = hand_grads(w1, w2, x, t)
    d1 = g1 + 0.01 * w1
    w1_new = w1 - 0.03 * (0.9 * buf + d1)
    _, g2_prime = hand_grads(w1_new, w2, x, t)
    table = covariate_shift(model, sq_loss, (x, t), optimizer=opt)
    for metric, expected in zip(("ics_l2", "ics_cos", "ics_rel"), metrics_from(g2, g2_prime)):
        torch.testing.assert_close(pick(table, "1", metric), expected)


@pytest.mark.parametrize("make_opt", [lambda p: torch.optim.Adam(p, lr=0.01),
                                      lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1)])
def test_optimizer_step_matches_naive_on_bn_net(make_opt):
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)).double()
    x, y = torch.randn(12, 4, dtype=torch.float64), torch.randint(0, 3, (12,))
    loss_fn = nn.CrossEntropyLoss()
    opt = make_opt(model.parameters())
    for _ in range(2):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    table = covariate_shift(model, loss_fn, (x, y), optimizer=opt)

    # naive: deep copies, the real optimizer step on a copy, grads by .backward()
    def grads(m):
        m.zero_grad()
        loss_fn(m(x), y).backward()
        return [p.grad.clone() for p in m.parameters()]

    m0 = copy.deepcopy(model)
    g = grads(m0)
    stepped, opt2 = copy.deepcopy((model, opt))  # deep-copied together: the optimizer points at the copy
    for p, gi in zip(stepped.parameters(), g):
        p.grad = gi.clone()
    opt2.step()
    owners = ["0", "1", "3"]  # modules owning parameters, forward order
    params = {name: list(dict(model.named_modules())[name].parameters(recurse=False)) for name in owners}
    new_params = {name: list(dict(stepped.named_modules())[name].parameters(recurse=False)) for name in owners}
    for i, name in enumerate(owners):
        m = copy.deepcopy(model)
        mods = dict(m.named_modules())
        with torch.no_grad():
            for earlier in owners[:i]:
                for p, q in zip(mods[earlier].parameters(recurse=False), new_params[earlier]):
                    p.copy_(q)
        m.zero_grad()
        loss_fn(m(x), y).backward()
        g_layer = torch.cat([p.grad.flatten() for p in mods[name].parameters(recurse=False)])
        g_orig = torch.cat([gi.flatten() for gi, p in zip(g, model.parameters())
                            if any(p is q for q in params[name])])
        for metric, expected in zip(("ics_l2", "ics_cos", "ics_rel"), metrics_from(g_orig, g_layer)):
            torch.testing.assert_close(pick(table, name, metric), expected)
    assert table[table.metric == "ics_l2"].module.tolist() == ["Linear", "BatchNorm1d", "Linear"]


def test_layers_filter_and_unknown_layer():
    model, x, t = two_layer()
    table = covariate_shift(model, sq_loss, (x, t), lr=0.1, layers=["1"])
    assert table.layer.unique().tolist() == ["1"]
    full = covariate_shift(model, sq_loss, (x, t), lr=0.1)
    torch.testing.assert_close(pick(table, "1", "ics_l2"), pick(full, "1", "ics_l2"))
    with pytest.raises(repdiag.LayerNotFoundError, match="not modules owning"):
        covariate_shift(model, sq_loss, (x, t), lr=0.1, layers=["2"])
    with pytest.raises(repdiag.ConfigError, match="list of module names"):
        covariate_shift(model, sq_loss, (x, t), lr=0.1, layers="1")


def test_step_source_validation():
    model, x, t = two_layer()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(repdiag.ConfigError, match="optimizer=opt"):
        covariate_shift(model, sq_loss, (x, t))
    with pytest.raises(repdiag.ConfigError, match="not both"):
        covariate_shift(model, sq_loss, (x, t), optimizer=opt, lr=0.1)
    with pytest.raises(repdiag.ConfigError, match="lr must be > 0"):
        covariate_shift(model, sq_loss, (x, t), lr=0.0)
    with pytest.raises(repdiag.ConfigError, match="torch.optim.Optimizer"):
        covariate_shift(model, sq_loss, (x, t), optimizer="sgd")
    lbfgs = torch.optim.LBFGS(model.parameters())
    with pytest.raises(repdiag.ConfigError, match="closure"):
        covariate_shift(model, sq_loss, (x, t), optimizer=lbfgs)


def test_layer_without_gradient_gives_nan_cosine_with_warning():
    model, x, t = two_layer()
    loss = lambda out, tgt: sq_loss(out, tgt) * 0.0  # noqa: E731 - every gradient is zero
    with pytest.warns(repdiag.RepdiagWarning) as record:
        table = covariate_shift(model, loss, (x, t), lr=0.1)
    assert [str(w.message)[:32] for w in record] == ["ics_cos and ics_rel of layer '0'",
                                                       "ics_cos and ics_rel of layer '1'"]
    assert pick(table, "1", "ics_rel").isnan()
    assert pick(table, "1", "ics_cos").isnan()
