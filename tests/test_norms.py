"""The gamma table beyond BatchNorm: LayerNorm, GroupNorm, RMSNorm and Hugging Face-style norm
modules, each under its own ``module`` name, against hand-computed values on several shapes;
norms without affine parameters are named in a warning, never a crash."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import repdiag
from repdiag.bn import gamma_table, is_norm_layer, is_norm_module, norm_layers, plain_norm_layers
from repdiag.cli._evaluate import bn_gammas

from .test_bn_gamma import cell


class T5LayerNorm(nn.Module):
    """The shape of Hugging Face's T5LayerNorm / LlamaRMSNorm: a 1-D weight, no bias."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


class LlamaRMSNorm(T5LayerNorm):
    pass


class NormalizedLinear(nn.Linear):
    """Not a norm layer: the name does not end in Norm, and its weight is 2-D anyway."""


class ScaleNorm(nn.Module):
    """A name that ends in Norm but a 2-D weight: not recognised."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2, 3))


def mixed_model() -> nn.Sequential:
    model = nn.Sequential(nn.Conv2d(1, 6, 1), nn.BatchNorm2d(6), nn.GroupNorm(3, 6), nn.Flatten(), nn.LazyLinear(4),
                          nn.LayerNorm(4), nn.RMSNorm(4), T5LayerNorm(4), LlamaRMSNorm(4))
    model(torch.randn(2, 1, 2, 2))  # materialise the lazy layer
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.0, 0.004, -0.03, 0.07, 0.5, -2.0]))
        model[2].weight.copy_(torch.tensor([1.0, -0.0001, 0.2, 0.002, 0.06, 0.0]))
        model[2].bias.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
        model[5].weight.copy_(torch.tensor([0.5, 0.5, 0.009, 3.0]))
        model[5].bias.copy_(torch.tensor([-1.0, 1.0, -1.0, 1.0]))
        model[6].weight.copy_(torch.tensor([0.0, 0.0, 0.0, 1.0]))
        model[7].weight.copy_(torch.tensor([0.04, 0.04, 0.2, 0.2]))
        model[8].weight.copy_(torch.tensor([-0.5, 0.0005, 0.08, 1.0]))
    return model


def test_every_norm_kind_has_rows_under_its_own_name():
    t = gamma_table(mixed_model())
    repdiag.tables.validate_table(t)
    modules = t.drop_duplicates("layer").set_index("layer")["module"].to_dict()
    assert modules == {"1": "BatchNorm2d", "2": "GroupNorm", "5": "LayerNorm", "6": "RMSNorm", "7": "T5LayerNorm",
                       "8": "LlamaRMSNorm"}
    depths = t.drop_duplicates("layer").set_index("layer")["depth"].to_dict()
    assert depths == {"1": 0, "2": 1, "5": 2, "6": 3, "7": 4, "8": 5}
    # hand-counted |gamma| < tau per layer, taus 1e-3, 1e-2, 5e-2, 1e-1
    expected = {"1": [1 / 6, 2 / 6, 3 / 6, 4 / 6], "2": [2 / 6, 3 / 6, 3 / 6, 4 / 6], "5": [0, 1 / 4, 1 / 4, 1 / 4],
                "6": [3 / 4, 3 / 4, 3 / 4, 3 / 4], "7": [0, 0, 2 / 4, 2 / 4], "8": [1 / 4, 1 / 4, 1 / 4, 2 / 4]}
    for layer, fracs in expected.items():
        got = [cell(t, layer, "gamma_below", threshold=tau) for tau in (1e-3, 1e-2, 5e-2, 1e-1)]
        assert got == pytest.approx(fracs, abs=0), layer
    assert t[t.layer == "2"].n.unique().tolist() == [6] and t[t.layer == "7"].n.unique().tolist() == [4]
    # beta only where the layer has a bias: BN, GN, LN; not RMSNorm nor the HF-style norms
    with_beta = set(t[t.metric == "beta_mean"].layer)
    assert with_beta == {"1", "2", "5"}
    assert cell(t, "2", "beta_mean") == 3.5 and cell(t, "5", "beta_std") == 1.0
    assert cell(t, "7", "gamma_mean") == pytest.approx(0.12, rel=1e-6)  # float32 0.04 and 0.2
    assert cell(t, "7", "gamma_std") == pytest.approx(0.08, rel=1e-6)
    assert cell(t, "8", "gamma_quantile", quantile=0.0) == -0.5 and cell(t, "8", "gamma_quantile", quantile=1.0) == 1.0


@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4)])
def test_layernorm_of_any_normalized_shape_against_numpy(shape):
    ln = nn.LayerNorm(shape)
    g = torch.Generator().manual_seed(len(shape))
    with torch.no_grad():
        ln.weight.copy_(torch.rand(shape, generator=g) * 0.2 - 0.1)
        ln.bias.copy_(torch.randn(shape, generator=g))
    t = gamma_table(nn.Sequential(ln), thresholds=(0.01, 0.05), quantiles=(0.0, 0.5, 1.0))
    w = ln.weight.detach().double().numpy().ravel()
    b = ln.bias.detach().double().numpy().ravel()
    assert t.n.unique().tolist() == [int(np.prod(shape))]
    for tau in (0.01, 0.05):
        assert cell(t, "0", "gamma_below", threshold=tau) == pytest.approx(float((np.abs(w) < tau).mean()), abs=0)
    assert cell(t, "0", "gamma_std") == pytest.approx(w.std(), rel=1e-12)
    torch.testing.assert_close(torch.tensor([cell(t, "0", "beta_quantile", quantile=q) for q in (0.0, 0.5, 1.0)],
                                            dtype=torch.float64), torch.from_numpy(np.quantile(b, [0.0, 0.5, 1.0])))


@pytest.mark.parametrize("groups,channels", [(1, 4), (2, 8), (8, 8)])
def test_groupnorm_counts_channels_not_groups(groups, channels):
    gn = nn.GroupNorm(groups, channels)
    with torch.no_grad():
        gn.weight.copy_(torch.arange(channels, dtype=torch.float32) / 100)  # 0, 0.01, 0.02, ...
    t = gamma_table(nn.Sequential(gn), thresholds=(0.015,))
    assert cell(t, "0", "gamma_below", threshold=0.015) == 2 / channels
    assert t.n.unique().tolist() == [channels]


def test_norms_without_affine_parameters_are_named_not_crashing():
    model = nn.Sequential(nn.BatchNorm1d(3, affine=False), nn.LayerNorm(3, elementwise_affine=False),
                          nn.GroupNorm(1, 3, affine=False), nn.RMSNorm(3, elementwise_affine=False),
                          nn.LayerNorm(3))
    assert [n for n, _ in plain_norm_layers(model)] == ["0", "1", "2", "3"]
    assert [n for n, _ in norm_layers(model)] == ["4"]
    with pytest.warns(repdiag.RepdiagWarning, match=r"4 normalization layer\(s\) without affine parameters.*"
                                                     r"'0' \(BatchNorm1d\).*'3' \(RMSNorm\)"):
        t = gamma_table(model)
    assert set(t.layer) == {"4"}
    only_plain = nn.Sequential(nn.LayerNorm(3, elementwise_affine=False))
    with pytest.warns(repdiag.RepdiagWarning, match="no gamma or beta"):
        assert len(gamma_table(only_plain)) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(gamma_table(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))) == 0  # no norm at all: nothing to say


def test_the_name_rule():
    assert is_norm_layer(T5LayerNorm(3)) and is_norm_layer(LlamaRMSNorm(3)) and is_norm_layer(nn.RMSNorm(3))
    assert not is_norm_module(NormalizedLinear(3, 3)) and not is_norm_module(ScaleNorm())
    assert is_norm_module(nn.InstanceNorm2d(3)) and not is_norm_layer(nn.InstanceNorm2d(3))


def test_plugin_and_cli_gammas_cover_layer_and_rms_norm():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.GELU(), nn.Linear(4, 4), nn.RMSNorm(4), nn.ReLU())
    rec = repdiag.attach(model, metrics=["gamma"], metric_options={"gamma": {"thresholds": (0.5,)}})
    model(torch.randn(5, 3))
    rec.step()
    t = rec.table()
    rec.detach()
    assert set(zip(t.layer, t.module)) == {("1", "LayerNorm"), ("4", "RMSNorm")}
    assert cell(t, "1", "gamma_below", threshold=0.5) == 0.0  # LayerNorm's gamma starts at 1
    gammas = bn_gammas(model)
    assert sorted(gammas) == ["1", "4"] and gammas["4"].shape == (4,)
    ln2 = nn.Sequential(nn.LayerNorm((2, 3)))
    assert bn_gammas(ln2)["0"].shape == (6,)


def test_hf_norm_modules_are_recognised():
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaRMSNorm as HFLlama
    from transformers.models.t5.modeling_t5 import T5LayerNorm as HFT5

    del transformers
    model = nn.Sequential(HFT5(6), HFLlama(6))
    t = gamma_table(model, thresholds=(0.5,))
    assert sorted(set(zip(t.layer, t.module))) == [("0", "T5LayerNorm"), ("1", "LlamaRMSNorm")]
    assert cell(t, "0", "gamma_mean") == 1.0 and cell(t, "1", "gamma_below", threshold=0.5) == 0.0
