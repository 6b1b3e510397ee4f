"""attach(..., loss_fn=..., landscape_every=...): probes on the recorder's schedule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import repdiag
from repdiag.landscape import StateSnapshot, covariate_shift, gradient_predictiveness


def setup(norm: bool = True):
    torch.manual_seed(0)
    layers = [nn.Linear(5, 8)] + ([nn.BatchNorm1d(8)] if norm else []) + [nn.ReLU(), nn.Linear(8, 3)]
    model = nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    data = [(torch.randn(16, 5), torch.randint(0, 3, (16,))) for _ in range(5)]
    return model, opt, data


def train(model, opt, data, rec, *, inputs=True):
    loss_fn = nn.CrossEntropyLoss()
    for x, y in data:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
        rec.step(labels=y, inputs=x if inputs else None)


def test_scheduled_rows_match_direct_calls_and_hooks_are_paused():
    model, opt, data = setup()
    loss_fn = nn.CrossEntropyLoss()
    rec = repdiag.attach(model, loss_fn=loss_fn, landscape_every=2, optimizer=opt, run="bn",
                         landscape_options={"step_sizes": [0.1, 0.2]}, metrics=["sparsity"])
    expected = {}
    loss_fn2 = nn.CrossEntropyLoss()
    for i, (x, y) in enumerate(data):
        opt.zero_grad()
        loss_fn2(model(x), y).backward()
        opt.step()
        if i % 2 == 0:  # the probe runs after steps 1, 3, 5: compute the same thing directly first
            with rec.paused():
                expected[i + 1] = (gradient_predictiveness(model, loss_fn, (x, y), step_sizes=[0.1, 0.2]),
                                   covariate_shift(model, loss_fn, (x, y), optimizer=opt))
        snap = StateSnapshot.take(model, opt)
        rec.step(labels=y, inputs=x)
        assert snap.differences(model, opt) == []
    table = rec.table()
    repdiag.tables.validate_table(table)
    beta = table[table.metric == "beta_smoothness"]
    assert beta.step.tolist() == [1, 3, 5] and (beta.layer == "(model)").all() and (beta.run == "bn").all()
    for step, (pred, cov) in expected.items():
        got = table[(table.step == step) & (table.metric == "beta_smoothness")].value.iloc[0]
        assert got == pred[pred.metric == "beta_smoothness"].value.iloc[0]
        got_cov = table[(table.step == step) & (table.metric == "ics_l2")].value.tolist()
        assert got_cov == cov[cov.metric == "ics_l2"].value.tolist()
    assert set(table[table.metric == "ics_rel"].layer) == {"0", "1", "3"}
    # the probes' forward passes were not recorded: one batch per due training step only
    assert rec.stats("2").batches == len(data)
    rec.detach()


def test_missing_inputs_on_a_due_step_is_a_clear_error():
    model, opt, data = setup()
    rec = repdiag.attach(model, loss_fn=nn.CrossEntropyLoss(), landscape_every=3, optimizer=opt)
    with pytest.raises(repdiag.ConfigError, match=r"rec.step\(labels=y, inputs=x\)"):
        train(model, opt, data[:1], rec, inputs=False)
    rec.detach()


def test_probes_option_and_hessian():
    model, opt, data = setup(norm=False)
    rec = repdiag.attach(model, loss_fn=nn.CrossEntropyLoss(), landscape_every=10, metrics=None,
                         landscape_options={"probes": ["hessian", "predictiveness"], "hessian_iters": 3})
    train(model, opt, data[:2], rec)
    table = rec.table()
    assert set(table.metric) >= {"hessian_top_eig", "loss_range"} and "ics_l2" not in set(table.metric)
    assert table.step.unique().tolist() == [1]
    rec.detach()


@pytest.mark.parametrize("kwargs,match", [
    ({"landscape_every": 5}, "loss_fn=criterion"),
    ({"loss_fn": nn.MSELoss(), "landscape_every": 0}, "landscape_every must be"),
    ({"loss_fn": nn.MSELoss(), "landscape_options": {"stepsizes": [0.1]}}, "unknown landscape_options"),
    ({"loss_fn": nn.MSELoss(), "landscape_options": {"probes": ["nope"]}}, "subset of"),
    ({"loss_fn": nn.MSELoss()}, "optimizer=opt"),
    ({"loss_fn": nn.MSELoss(), "landscape_options": {"lr": 0.1, "step_sizes": [-1]}}, "step_sizes"),
])
def test_attach_validation(kwargs, match):
    model, _, _ = setup()
    with pytest.raises(repdiag.ConfigError, match=match):
        repdiag.attach(model, **kwargs)


def test_lr_option_without_optimizer():
    model, opt, data = setup()
    rec = repdiag.attach(model, loss_fn=nn.CrossEntropyLoss(), landscape_every=100, metrics=None,
                         landscape_options={"lr": 0.1, "probes": "covariate_shift", "layers": ["3"]})
    train(model, opt, data[:1], rec)
    table = rec.table()
    assert table.layer.unique().tolist() == ["3"] and set(table.metric) == {"ics_l2", "ics_cos", "ics_rel"}
    rec.detach()
