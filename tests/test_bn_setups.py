"""The BN-only set-ups: exactly which tensors train, the random-parameter control keeps every
other weight fixed under SGD with momentum and weight decay, gamma ~ U[0, 1] initialisation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import repdiag
from repdiag.bn import (
    freeze_all_but_bn,
    freeze_all_but_output,
    freeze_all_but_random,
    gamma_uniform_init,
    trainable_summary,
)
from repdiag.models import small_cnn


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return small_cnn(norm="bn", width=4)


def trainable(model):
    return [n for n, p in model.named_parameters() if p.requires_grad]


BN_NAMES = ["1.weight", "1.bias", "4.weight", "4.bias", "8.weight", "8.bias", "13.weight", "13.bias"]


def test_freeze_all_but_bn_exact_set():
    model = cnn()
    s = freeze_all_but_bn(model)
    assert trainable(model) == BN_NAMES == s.trainable
    assert s.n_trainable == 2 * (4 + 8 + 8 + 64) and s.n_total == sum(p.numel() for p in model.parameters())
    assert s.setup == "bn-only" and "bn-only:" in str(s)
    s2 = freeze_all_but_bn(model, train_output=True)
    assert trainable(model) == BN_NAMES + ["15.weight", "15.bias"]
    assert s2.n_trainable == s.n_trainable + 64 * 10 + 10
    s3 = freeze_all_but_bn(model, train_output=True, output_layer_name="12")
    assert trainable(model) == BN_NAMES[:6] + ["12.weight"] + BN_NAMES[6:]
    assert s3.setup == "bn+output"


def test_freeze_all_but_output_and_errors():
    model = cnn()
    s = freeze_all_but_output(model)
    assert trainable(model) == ["15.weight", "15.bias"] and s.n_trainable == 650
    with pytest.raises(repdiag.ConfigError, match="no normalization layer"):
        freeze_all_but_bn(small_cnn(norm="none", width=4))
    with pytest.raises(repdiag.LayerNotFoundError, match="not a module"):
        freeze_all_but_output(model, output_layer_name="99")


def effective_weights(model):
    return {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def test_random_control_counts_and_keeps_other_weights_fixed():
    model = cnn()
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    before = effective_weights(model)
    bn_before = {n: p.detach().clone() for n, p in model.named_parameters() if n in BN_NAMES}
    s = freeze_all_but_random(model, per_channel=2, generator=torch.Generator().manual_seed(0))
    assert s.n_trainable == 2 * (4 + 8 + 8 + 64)  # the BN-only count for this net
    assert s.partial == {"0.weight": 8, "3.weight": 16, "7.weight": 16, "12.weight": 128}
    # the forward is unchanged by the parametrization itself
    for name, w in effective_weights(model).items():
        assert torch.equal(w, before[name])
    # an optimizer over *all* parameters, with momentum and weight decay
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    after = effective_weights(model)
    for name, m in model.named_modules():
        if name in s.partial or name == "15":
            changed = after[name] != before[name]
            if name == "15":
                assert not changed.any()  # output layer frozen
                continue
            idx = m.parametrizations.weight[0].index
            mask = torch.zeros(changed.numel(), dtype=torch.bool)
            mask[idx] = True
            assert not changed.flatten()[~mask].any(), name  # every other entry fixed
            assert changed.flatten()[mask].float().mean() > 0.5, name  # the chosen ones train
            per_row = mask.view(changed.shape[0], -1).sum(1)
            assert per_row.tolist() == [2] * changed.shape[0]
    for n, p in model.named_parameters():
        if n in bn_before:
            assert torch.equal(p, bn_before[n])


def test_random_control_with_output_and_refusals():
    model = cnn()
    s = freeze_all_but_random(model, per_channel=1, train_output=True, generator=torch.Generator().manual_seed(1))
    assert s.n_trainable == 4 + 8 + 8 + 64 + 650 and s.setup == "random+output"
    assert trainable_summary(model).n_trainable == s.n_trainable
    with pytest.raises(repdiag.ConfigError, match="already has a parametrized weight"):
        freeze_all_but_random(model)
    with pytest.raises(repdiag.ConfigError, match="per_channel"):
        freeze_all_but_random(cnn(), per_channel=0)
    with pytest.raises(repdiag.ConfigError, match="no conv or linear weight"):
        freeze_all_but_random(nn.Sequential(nn.Linear(3, 2)))


def test_random_control_same_seed_same_draw():
    a, b = cnn(), cnn()
    freeze_all_but_random(a, generator=torch.Generator().manual_seed(5))
    freeze_all_but_random(b, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a[0].parametrizations.weight[0].index, b[0].parametrizations.weight[0].index)


def test_gamma_uniform_init():
    model = cnn()
    gamma_uniform_init(model, torch.Generator().manual_seed(0))
    gammas = torch.cat([model[i].weight.detach() for i in (1, 4, 8, 13)])
    assert gammas.min() >= 0 and gammas.max() <= 1 and gammas.std() > 0.2
    assert all(model[i].bias.abs().sum() == 0 for i in (1, 4, 8, 13))
    t = repdiag.bn.gamma_table(model, thresholds=(0.5,))
    frac = t[t.metric == "gamma_below"].value
    assert ((frac > 0.1) & (frac < 0.9)).all()
