"""gradient_predictiveness and hessian_top_eigenvalue: closed forms on a quadratic, a naive
re-implementation on a tiny network, undefined cases and input validation."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import repdiag
from repdiag.landscape import gradient_predictiveness, hessian_top_eigenvalue

from .conftest import DEVICES


class Quad(nn.Module):
    """forward returns the parameter itself; with loss 0.5 w^T A w the landscape is exact."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w


def quad_loss(a: torch.Tensor):
    return lambda w, _target: 0.5 * w @ a @ w


def spd(d: int, dtype: torch.dtype, device: str, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(d, d, generator=g, dtype=torch.float64)
    return (m @ m.T / d + 0.1 * torch.eye(d, dtype=torch.float64)).to(device, dtype)


def values(t, metric):
    sub = t[t.metric == metric]
    return torch.tensor(sub.value.to_numpy(), dtype=torch.float64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,d", [(torch.float64, 5), (torch.float32, 12)])
def test_quadratic_closed_forms(device, dtype, d):
    a = spd(d, dtype, device)
    w = torch.randn(d, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(device, dtype)
    etas = [0.05, 0.1, 0.3]
    t = gradient_predictiveness(Quad(w), quad_loss(a), (torch.zeros(1, device=device), None), step_sizes=etas)
    a64, w64 = a.double().cpu(), w.double().cpu()
    g = a64 @ w64
    loss = lambda v: 0.5 * v @ a64 @ v  # noqa: E731
    expect_loss = torch.stack([loss(w64 - e * g) for e in [0.0, *etas]])
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(values(t, "loss"), expect_loss, **tol)
    torch.testing.assert_close(values(t, "grad_norm"), g.norm()[None], **tol)
    ag = (a64 @ g).norm()
    torch.testing.assert_close(values(t, "grad_change"), torch.tensor(etas, dtype=torch.float64) * ag, **tol)
    torch.testing.assert_close(values(t, "grad_change_rel"), torch.tensor(etas, dtype=torch.float64) * ag / g.norm(),
                               **tol)
    beta = (ag / g.norm()).expand(len(etas))
    torch.testing.assert_close(values(t, "beta_local"), beta, **tol)
    torch.testing.assert_close(values(t, "beta_smoothness"), beta[:1], **tol)
    rng = expect_loss.max() - expect_loss.min()
    torch.testing.assert_close(values(t, "loss_range"), rng[None], **tol)
    torch.testing.assert_close(values(t, "loss_range_rel"), (rng / expect_loss[0])[None], **tol)
    assert t.loc[t.metric == "loss", "step_size"].tolist() == [0.0, *etas]
    repdiag.tables.validate_table(t)


def naive(model, loss_fn, x, y, etas):
    """The definitions written out with deep copies and .backward()."""
    def grad_at(m):
        m.zero_grad()
        loss = loss_fn(m(x), y)
        loss.backward()
        return float(loss.detach()), torch.cat([p.grad.flatten().double() for p in m.parameters()])

    m0 = copy.deepcopy(model)
    loss0, g = grad_at(m0)
    losses, changes = [loss0], []
    for eta in etas:
        m = copy.deepcopy(model)
        with torch.no_grad():
            for p, q in zip(m.parameters(), m0.parameters()):
                p -= eta * q.grad
        le, ge = grad_at(m)
        losses.append(le)
        changes.append(float((ge - g).norm()))
    return losses, changes, float(g.norm())


@pytest.mark.parametrize("norm", ["bn", "none"])
def test_tiny_network_matches_naive(norm):
    torch.manual_seed(0)
    layers = [nn.Linear(6, 10)] + ([nn.BatchNorm1d(10)] if norm == "bn" else []) + [nn.ReLU(), nn.Linear(10, 4)]
    model = nn.Sequential(*layers).double()
    x, y = torch.randn(20, 6, dtype=torch.float64), torch.randint(0, 4, (20,))
    etas = [0.1, 0.5, 1.0]
    loss_fn = nn.CrossEntropyLoss()
    losses, changes, gnorm = naive(model, loss_fn, x, y, etas)
    t = gradient_predictiveness(model, loss_fn, (x, y), step_sizes=etas)
    torch.testing.assert_close(values(t, "loss"), torch.tensor(losses, dtype=torch.float64))
    torch.testing.assert_close(values(t, "grad_change"), torch.tensor(changes, dtype=torch.float64))
    betas = torch.tensor(changes, dtype=torch.float64) / (torch.tensor(etas, dtype=torch.float64) * gnorm)
    torch.testing.assert_close(values(t, "beta_smoothness"), betas.max()[None])
    assert (t.n == 20).all()


def test_frozen_parameters_stay_out_of_w():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    model[0].weight.requires_grad_(False)
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randint(0, 2, (8,))
    full = nn.Sequential(*[copy.deepcopy(m) for m in model])
    t = gradient_predictiveness(model, nn.CrossEntropyLoss(), (x, y), step_sizes=[0.2])
    # the naive version, moving only the trainable tensors
    loss_fn = nn.CrossEntropyLoss()
    full.zero_grad()
    loss_fn(full(x), y).backward()
    g = [p.grad for p in full.parameters() if p.requires_grad]
    assert len(g) == 3
    torch.testing.assert_close(values(t, "grad_norm"), torch.cat([v.flatten() for v in g]).norm()[None])


def test_step_size_order_and_duplicates_do_not_change_values():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    batch = (torch.randn(10, 4), torch.randint(0, 3, (10,)))
    a = gradient_predictiveness(model, nn.CrossEntropyLoss(), batch, step_sizes=[0.1, 0.3])
    b = gradient_predictiveness(model, nn.CrossEntropyLoss(), batch, step_sizes=[0.3, 0.1])
    for metric in ("beta_smoothness", "loss_range", "grad_norm"):
        torch.testing.assert_close(values(a, metric), values(b, metric))


def test_zero_gradient_is_undefined_with_warning():
    a = spd(3, torch.float64, "cpu")
    with pytest.warns(repdiag.RepdiagWarning) as record:
        t = gradient_predictiveness(Quad(torch.zeros(3, dtype=torch.float64)), quad_loss(a), (torch.zeros(1), None),
                                    step_sizes=[0.1])
    messages = " | ".join(str(w.message) for w in record)
    assert "gradient norm is 0" in messages and "loss at the current weights is 0.0" in messages
    assert values(t, "loss_range_rel").isnan().all()
    assert values(t, "beta_smoothness").isnan().all()
    assert values(t, "grad_change_rel").isnan().all()
    assert values(t, "grad_change").eq(0).all()


def test_divergent_step_makes_range_nan_with_warning():
    model = Quad(torch.tensor([1.0], dtype=torch.float64))
    loss = lambda w, _t: torch.where(w.abs() < 0.5, torch.full_like(w, float("inf")), w * w).sum()  # noqa: E731
    with pytest.warns(repdiag.RepdiagWarning, match="loss range"):
        t = gradient_predictiveness(model, loss, (torch.zeros(1), None), step_sizes=[0.4])
    assert values(t, "loss_range").isnan().all()


@pytest.mark.parametrize("bad", [[], [0.0], [-0.1], [float("nan")], "x", [None]])
def test_bad_step_sizes(bad):
    with pytest.raises(repdiag.ConfigError, match="step_sizes"):
        gradient_predictiveness(nn.Linear(2, 2), nn.MSELoss(), (torch.randn(3, 2), torch.randn(3, 2)), step_sizes=bad)


def test_bad_batch_and_loss():
    model = nn.Linear(2, 2)
    with pytest.raises(repdiag.ConfigError, match=r"batch must be a pair \(inputs, targets\)"):
        gradient_predictiveness(model, nn.MSELoss(), torch.randn(3, 2))
    with pytest.raises(repdiag.ShapeError, match="scalar"):
        gradient_predictiveness(model, nn.MSELoss(reduction="none"), (torch.randn(3, 2), torch.randn(3, 2)))
    with pytest.raises(repdiag.ConfigError, match="no trainable parameters"):
        gradient_predictiveness(model.requires_grad_(False), nn.MSELoss(), (torch.randn(3, 2), torch.randn(3, 2)))


def test_dict_and_tuple_inputs():
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, a, b):
            return self.lin(a + b)

    torch.manual_seed(3)
    m = Two()
    a, b, y = torch.randn(5, 3), torch.randn(5, 3), torch.randn(5, 2)
    t1 = gradient_predictiveness(m, nn.MSELoss(), ((a, b), y), step_sizes=[0.1])
    t2 = gradient_predictiveness(m, nn.MSELoss(), ({"a": a, "b": b}, y), step_sizes=[0.1])
    torch.testing.assert_close(values(t1, "beta_smoothness"), values(t2, "beta_smoothness"))
    assert int(t1.n.iloc[0]) == 5


def test_hessian_top_eigenvalue_closed_form():
    a = torch.diag(torch.tensor([0.5, -1.0, 3.0, 2.0], dtype=torch.float64))
    q = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64))[0]
    a = q @ a @ q.T
    t = hessian_top_eigenvalue(Quad(torch.ones(4, dtype=torch.float64)), quad_loss(a), (torch.zeros(1), None),
                               iters=200, tol=1e-12)
    torch.testing.assert_close(values(t, "hessian_top_eig"), torch.tensor([3.0], dtype=torch.float64), rtol=1e-6,
                               atol=1e-8)
    assert int(t.iters.iloc[0]) < 200


def test_hessian_of_linear_loss_is_nan_with_warning():
    model = nn.Linear(3, 1)
    loss = lambda out, _t: out.sum()  # noqa: E731 - linear in the parameters: no second derivative
    with pytest.warns(repdiag.RepdiagWarning, match="hessian_top_eig"):
        t = hessian_top_eigenvalue(model, loss, (torch.randn(6, 3), None), iters=3)
    assert values(t, "hessian_top_eig").isnan().all()
