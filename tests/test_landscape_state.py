"""Every probe leaves parameters, .grad (None included), buffers, RNG state, modes and the
optimizer's state bitwise as it found them; StateSnapshot itself detects each kind of change."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from repdiag.landscape import StateSnapshot, covariate_shift, gradient_predictiveness, hessian_top_eigenvalue


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.3),
        nn.Flatten(), nn.Linear(4 * 5 * 5, 6), nn.BatchNorm1d(6, momentum=None), nn.ReLU(), nn.Linear(6, 3),
    )


def trained(make_opt):
    model = net()
    opt = make_opt(model.parameters())
    x, y = torch.randn(10, 1, 5, 5), torch.randint(0, 3, (10,))
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(3):  # the optimizer holds state (momentum buffers / Adam moments)
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    # a mix of .grad states: some set (stale values), some None
    opt.zero_grad(set_to_none=True)
    loss_fn(model(x), y).backward()
    model[0].bias.grad = None
    model[8].weight.grad = None
    model[3].eval()  # a mixed mode: one submodule in eval
    return model, opt, (x, y), loss_fn


OPTIMIZERS = {
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-4),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-3),
}


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("probe", ["predictiveness", "covariate_optimizer", "covariate_lr", "hessian"])
def test_probe_restores_everything_bitwise(opt_name, probe):
    model, opt, batch, loss_fn = trained(OPTIMIZERS[opt_name])
    model.train(False)
    model[2].train(True)  # modes are per module
    torch.manual_seed(123)
    before = StateSnapshot.take(model, opt)
    assert before.differences(model, opt) == []
    if probe == "predictiveness":
        gradient_predictiveness(model, loss_fn, batch, step_sizes=[0.1, 0.4])
    elif probe == "covariate_optimizer":
        covariate_shift(model, loss_fn, batch, optimizer=opt)
    elif probe == "covariate_lr":
        covariate_shift(model, loss_fn, batch, lr=0.1)
    else:
        hessian_top_eigenvalue(model, loss_fn, batch, iters=3)
    assert before.differences(model, opt) == []
    assert model[1].num_batches_tracked.item() == 4  # BN buffers untouched (3 + 1 training passes)
    assert model[0].bias.grad is None and model[8].weight.grad is None


def test_probe_runs_bn_in_train_mode_and_restores_eval():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).eval()
    with torch.no_grad():
        model[1].running_mean.fill_(5.0)  # eval-mode output would differ a lot from train mode
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    loss_fn = nn.CrossEntropyLoss()
    t = gradient_predictiveness(model, loss_fn, (x, y), step_sizes=[0.1])
    model.train()
    train_loss = loss_fn(model(x), y).item()
    model.eval()
    eval_loss = loss_fn(model(x), y).item()
    probe_loss = float(t[(t.metric == "loss") & (t.step_size == 0)].value.iloc[0])
    assert probe_loss == pytest.approx(train_loss, rel=1e-6) and probe_loss != pytest.approx(eval_loss, rel=1e-3)
    t_eval = gradient_predictiveness(model, loss_fn, (x, y), step_sizes=[0.1], train=None)
    model.eval()
    probe_eval = float(t_eval[(t_eval.metric == "loss") & (t_eval.step_size == 0)].value.iloc[0])
    assert probe_eval == pytest.approx(eval_loss, rel=1e-6)
    assert not model.training and not model[1].training


def test_dropout_mask_is_the_same_in_every_pass():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 32), nn.Dropout(0.5), nn.Linear(32, 1))
    x, y = torch.randn(6, 4), torch.randn(6, 1)
    # with one fixed mask the landscape is the quadratic of a linear model: predictiveness of
    # two probes at different step-size grids agrees on the shared step size
    a = gradient_predictiveness(model, nn.MSELoss(), (x, y), step_sizes=[0.1])
    b = gradient_predictiveness(model, nn.MSELoss(), (x, y), step_sizes=[0.05, 0.1])
    va = a[(a.metric == "grad_change") & (a.step_size == 0.1)].value.iloc[0]
    vb = b[(b.metric == "grad_change") & (b.step_size == 0.1)].value.iloc[0]
    assert va == vb


def test_snapshot_detects_each_kind_of_change():
    model, opt, batch, loss_fn = trained(OPTIMIZERS["sgd_momentum"])
    snap = StateSnapshot.take(model, opt)
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] += 1e-7
    assert snap.differences(model, opt) == ["parameter 0.weight"]
    snap.restore(model, opt)
    model[0].bias.grad = torch.zeros_like(model[0].bias)
    assert snap.differences(model, opt) == ["grad 0.bias"]
    snap.restore(model, opt)
    model[1].running_var[0] = -0.0 if model[1].running_var[0] == 0 else 0.0
    assert snap.differences(model, opt) == ["buffer 1.running_var"]
    snap.restore(model, opt)
    model[5].eval()
    assert snap.differences(model, opt) == ["modes"]
    snap.restore(model, opt)
    torch.rand(1)
    assert snap.differences(model, opt) == ["rng"]
    snap.restore(model, opt)
    opt.state[model[0].weight]["momentum_buffer"][0, 0, 0, 0] += 1.0
    assert snap.differences(model, opt) == ["optimizer state"]
    snap.restore(model, opt)
    assert snap.differences(model, opt) == []
