"""Attaching repdiag never changes what the model computes: outputs, gradients, parameters,
buffers (BN running statistics), RNG state and mode are bitwise the same with and without it."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import repdiag
from repdiag.capture import select_layers

from ._archs import ARCHS


def _all_leaves(name: str, module: nn.Module) -> bool:
    return len(list(module.children())) == 0


def _run(model: nn.Module, x: torch.Tensor, train: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    model.train(train)
    torch.manual_seed(123)
    out = model(x)
    out.float().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), grads, torch.get_rng_state()


def _assert_same_model(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    for (na, ma), (_, mb) in zip(a.named_modules(), b.named_modules()):
        assert ma.training == mb.training, na


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("layers", ["auto", "leaves"])
def test_bitwise_identical_with_and_without_attach(arch: str, train: bool, layers: str) -> None:
    factory, make_x = ARCHS[arch]
    torch.manual_seed(0)
    base = factory()
    x = make_x()
    plain, hooked = copy.deepcopy(base), copy.deepcopy(base)
    out_a, grads_a, rng_a = _run(plain, x, train)
    spec = "auto" if layers == "auto" else _all_leaves
    with repdiag.attach(hooked, spec, max_samples=16, reduce="mean", metrics=None) as rec:
        out_b, grads_b, rng_b = _run(hooked, x, train)
        rec.step()
        assert rec.layers, "nothing was selected"
        assert any(rec.stats(name) is not None for name in rec.layers), "no layer recorded anything"
    assert torch.equal(out_a, out_b)
    assert grads_a.keys() == grads_b.keys()
    for k in grads_a:
        assert torch.equal(grads_a[k], grads_b[k]), k
    assert torch.equal(rng_a, rng_b)
    _assert_same_model(plain, hooked)
    assert plain.training == hooked.training == train


@pytest.mark.parametrize("reduce", ["mean", "positions", "flatten"])
def test_twenty_sgd_steps_identical(reduce: str) -> None:
    factory, make_x = ARCHS["sequential_cnn"]
    torch.manual_seed(0)
    base = factory()
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9)
    data = [(make_x(), torch.randint(0, 5, (6,))) for _ in range(20)]
    loss_fn = nn.CrossEntropyLoss()
    rec = repdiag.attach(b, every=2, max_samples=8, reduce=reduce)
    for model, opt, r in ((a, opt_a, None), (b, opt_b, rec)):
        torch.manual_seed(7)
        for x, y in data:
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
            if r is not None:
                r.step(labels=y)
    rec.table()  # computing metrics touches nothing either
    rec.detach()
    _assert_same_model(a, b)


def test_autocast_bitwise() -> None:
    factory, make_x = ARCHS["sequential_cnn"]
    base = factory()
    x = make_x()
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(1)
        out_a = a(x)
        with repdiag.attach(b, metrics=None) as rec:
            torch.manual_seed(1)
            out_b = b(x)
            rec.step()
            assert rec.stats("2") is not None and rec.stats("2").batches == 1
    assert out_a.dtype == torch.bfloat16
    assert torch.equal(out_a, out_b)


def test_no_hook_remains_after_detach_and_after_exception() -> None:
    model = ARCHS["resnet_functional"][0]()

    def hooks() -> int:
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())

    rec = repdiag.attach(model, _all_leaves)
    # one hook per layer, plus the two root hooks (forward bookkeeping and the padding mask)
    assert hooks() == len(rec.layers) + 2
    assert len(model._forward_pre_hooks) == 1 and len(model._forward_hooks) == 1
    rec.detach()
    assert hooks() == 0
    rec.detach()  # idempotent

    with pytest.raises(RuntimeError):
        with repdiag.attach(model, _all_leaves, capture="input"):
            assert hooks() > 0
            model(torch.randn(2, 4, 8, 8))  # wrong channel count: the conv raises
    assert hooks() == 0


def test_auto_selection_documented_rules() -> None:
    cnn = ARCHS["sequential_cnn"][0]()
    assert select_layers(cnn, "auto") == ["2", "7"]  # the ReLU modules
    resnet = ARCHS["resnet_functional"][0]()
    picked = select_layers(resnet, "auto")  # no activation modules except the stem's ReLU
    assert picked == ["stem.2"]
    tr = ARCHS["transformer"][0]()
    assert select_layers(tr, "auto") == ["enc.layers.0", "enc.layers.1", "head"]
    # DataParallel: names without the module. prefix
    with repdiag.attach(nn.DataParallel(ARCHS["sequential_cnn"][0]()), "module.2", metrics=None) as rec:
        assert rec.layers == ["2"]
