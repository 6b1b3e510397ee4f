"""UnitizedBatchNorm: plain BN at alpha = 0 (bitwise), a fixed per-sample norm at alpha = 1."""

from __future__ import annotations

import doctest

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from repdiag import ConfigError
from repdiag.models import mlp, small_cnn
from repdiag.nn import UnitizedBatchNorm1d, UnitizedBatchNorm2d
from repdiag.nn import _unitized

from .conftest import DEVICES

CASES = [
    (UnitizedBatchNorm1d, nn.BatchNorm1d, (16, 6)),
    (UnitizedBatchNorm1d, nn.BatchNorm1d, (8, 6, 5)),
    (UnitizedBatchNorm2d, nn.BatchNorm2d, (4, 6, 3, 5)),
]


def _pair(cls: type, ref_cls: type, device: str, **kw: object) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    ref = ref_cls(6, **kw).to(device)
    uni = cls(6, **kw).to(device)
    if getattr(ref, "weight", None) is not None:
        with torch.no_grad():
            ref.weight.uniform_(0.5, 1.5)
            ref.bias.normal_()
    missing = uni.load_state_dict(ref.state_dict())  # a plain BN checkpoint loads (alpha kept at 0)
    assert not missing.missing_keys and not missing.unexpected_keys
    return uni, ref


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls,ref_cls,shape", CASES)
@pytest.mark.parametrize("kw", [{}, {"affine": False}, {"track_running_stats": False}, {"momentum": None}])
def test_alpha_zero_is_batchnorm_bitwise(device: str, cls: type, ref_cls: type, shape: tuple[int, ...],
                                         kw: dict) -> None:
    uni, ref = _pair(cls, ref_cls, device, **kw)
    for step in range(3):
        x = (torch.randn(shape) * 3 + step).to(device).requires_grad_(True)
        xr = x.detach().clone().requires_grad_(True)
        y, yr = uni(x), ref(xr)
        assert torch.equal(y, yr)
        (y * torch.arange(y.numel(), device=device).view_as(y)).sum().backward()
        (yr * torch.arange(yr.numel(), device=device).view_as(yr)).sum().backward()
        assert torch.equal(x.grad, xr.grad)
    for name, buf in ref.named_buffers():
        assert torch.equal(dict(uni.named_buffers())[name], buf), name
    uni.eval(), ref.eval()
    x = torch.randn(shape).to(device) * 2
    assert torch.equal(uni(x), ref(x))


def test_state_dict_names_coincide() -> None:
    assert set(UnitizedBatchNorm2d(3).state_dict()) == set(nn.BatchNorm2d(3).state_dict()) | {"alpha"}
    assert isinstance(UnitizedBatchNorm1d(3), nn.BatchNorm1d)
    assert isinstance(UnitizedBatchNorm2d(3), nn.BatchNorm2d)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls,shape", [(UnitizedBatchNorm1d, (16, 6)), (UnitizedBatchNorm1d, (8, 6, 5)),
                                       (UnitizedBatchNorm2d, (4, 6, 3, 5))])
def test_alpha_one_gives_fixed_norm(device: str, cls: type, shape: tuple[int, ...]) -> None:
    m = cls(6, alpha_init=1.0).to(device)
    positions = 1
    for s in shape[2:]:
        positions *= s
    for train in (True, False):
        m.train(train)
        x = torch.randn(shape, device=device) * torch.rand(shape[0], *([1] * (len(shape) - 1)), device=device) * 10
        y = m(x)  # gamma = 1, beta = 0: y is the normalised output itself
        norms = torch.linalg.vector_norm(y.flatten(1), dim=1)
        assert_close(norms, torch.full_like(norms, positions ** 0.5), rtol=1e-4, atol=0)
    # with gamma and beta: y = gamma * u + beta where u has the fixed norm
    m.train()
    with torch.no_grad():
        m.weight.fill_(2.0)
        m.bias.fill_(1.0)
    u = (m(torch.randn(shape, device=device)) - 1.0) / 2.0
    assert_close(torch.linalg.vector_norm(u.flatten(1), dim=1), torch.full((shape[0],), positions ** 0.5,
                                                                         device=device), rtol=1e-4, atol=0)


def test_hand_worked_half_alpha() -> None:
    m = UnitizedBatchNorm1d(2, affine=False, alpha_init=0.5, eps=1e-12)
    x = torch.tensor([[1.0, 3.0], [-1.0, -3.0]])  # x_hat = [[1, 1], [-1, -1]], ||x_hat|| = sqrt(2)
    want = torch.tensor([[1.0, 1.0], [-1.0, -1.0]]) * (0.5 / 2 ** 0.5 + 0.5)
    assert_close(m(x), want)


def test_gradients_flow_to_alpha_and_freeze() -> None:
    m = UnitizedBatchNorm2d(4)
    y = m(torch.randn(6, 4, 3, 3) * 3)
    (y ** 3).sum().backward()
    assert m.alpha.grad is not None and float(m.alpha.grad.abs().sum()) > 0
    frozen = UnitizedBatchNorm1d(4, alpha_init=1.0, learn_alpha=False)
    assert not frozen.alpha.requires_grad
    assert "alpha" in frozen.state_dict()
    with pytest.raises(ConfigError, match="alpha_init"):
        UnitizedBatchNorm1d(4, alpha_init=float("nan"))


def test_models_build_with_unitized_and_train_step() -> None:
    for model, x in ((mlp("unitized", depth=2, width=16), torch.randn(8, 64)),
                     (small_cnn("unitized", width=4), torch.randn(8, 1, 8, 8))):
        assert any(isinstance(mod, (UnitizedBatchNorm1d, UnitizedBatchNorm2d)) for mod in model.modules())
        loss = nn.functional.cross_entropy(model(x), torch.zeros(8, dtype=torch.long))
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())


def test_docstring_examples() -> None:
    assert doctest.testmod(_unitized, raise_on_error=False).failed == 0
