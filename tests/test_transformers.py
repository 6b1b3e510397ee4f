"""Capture on sequence models: small Hugging Face configs (random weights, no download) and torch's
nn.TransformerEncoder. Default layers, units = true width, two lengths in one run, masks, bitwise."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import repdiag

transformers = pytest.importorskip("transformers")


def _bert() -> nn.Module:
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=24, max_position_embeddings=32)
    return transformers.BertModel(cfg)


def _gpt2() -> nn.Module:
    cfg = transformers.GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=32)
    return transformers.GPT2Model(cfg)


def _t5() -> nn.Module:
    cfg = transformers.T5Config(vocab_size=50, d_model=16, d_ff=24, num_layers=2, num_heads=2, d_kv=8)
    return transformers.T5EncoderModel(cfg)


def _vit() -> nn.Module:
    cfg = transformers.ViTConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=24)
    return transformers.ViTModel(cfg)


def _convnext() -> nn.Module:
    cfg = transformers.ConvNextConfig(num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)
    return transformers.ConvNextModel(cfg)


# name -> (factory, inputs(batch, length), expected auto layers, width of each)
TOKENS = {
    "bert": (_bert, ["encoder.layer.0.intermediate.intermediate_act_fn",
                     "encoder.layer.1.intermediate.intermediate_act_fn"], 24),
    "gpt2": (_gpt2, ["h.0.mlp.act", "h.1.mlp.act"], 64),
    "t5": (_t5, ["encoder.block.0.layer.1.DenseReluDense.act", "encoder.block.1.layer.1.DenseReluDense.act"], 24),
}


def _ids(b: int, t: int) -> torch.Tensor:
    return torch.randint(0, 50, (b, t), generator=torch.Generator().manual_seed(b * 100 + t))


@pytest.mark.parametrize("name", list(TOKENS))
def test_token_models_auto_layers_units_and_two_lengths(name: str) -> None:
    factory, expected, width = TOKENS[name]
    torch.manual_seed(0)
    model = factory().eval()
    rec = repdiag.attach(model, metrics=None)
    for block in expected:
        assert block in rec.layers
    assert all("pooler" in n or n in expected for n in rec.layers)  # BERT's pooler Tanh is an activation too
    for t in (7, 11):  # two sequence lengths in one run never raise
        model(input_ids=_ids(3, t))
        rec.step()
    for block in expected:
        stats = rec.stats(block)
        assert stats is not None and stats.units == width
        assert stats.samples == 6 and stats.entries_per_unit == 3 * 7 + 3 * 11
        assert rec.layout[block] == "N,T,D"
    rec.detach()


def test_vit_and_convnext_auto_layers_and_units() -> None:
    torch.manual_seed(0)
    vit = _vit().eval()
    rec = repdiag.attach(vit, metrics=None)
    blocks = [n for n in rec.layers if "pooler" not in n]  # one MLP activation per block
    assert len(blocks) == 2 and all(type(vit.get_submodule(n)).__name__ == "GELUActivation" for n in blocks)
    vit(pixel_values=torch.randn(2, 3, 16, 16))
    s = rec.stats(blocks[0])
    assert s is not None and s.units == 24 and s.entries_per_unit == 2 * 5  # 4 patches + CLS
    rec.detach()
    conv = _convnext().eval()
    rec = repdiag.attach(conv, metrics=None)
    acts = [n for n in rec.layers if n.endswith(".act")]
    assert acts == ["encoder.stages.0.layers.0.act", "encoder.stages.1.layers.0.act"]
    conv(pixel_values=torch.randn(2, 3, 32, 32))
    # inside a ConvNeXt block the activation runs channels-last on the 4x wide pointwise MLP
    assert rec.layout["encoder.stages.0.layers.0.act"] == "N,H,W,C"
    st0 = rec.stats("encoder.stages.0.layers.0.act")
    assert st0 is not None and st0.units == 4 * 8
    rec.detach()
    # the channels_first LayerNorm subclass of the stem reads channels
    rec = repdiag.attach(conv, "embeddings.layernorm", metrics=None)
    conv(pixel_values=torch.randn(2, 3, 32, 32))
    assert rec.layout["embeddings.layernorm"] == "N,C,H,W" and rec.stats("embeddings.layernorm").units == 8
    rec.detach()


@pytest.mark.parametrize("batch_first", [True, False])
def test_torch_transformer_encoder(batch_first: bool) -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 24, dropout=0.0, batch_first=batch_first, activation=nn.GELU())
    enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    rec = repdiag.attach(enc, metrics=None)
    assert rec.layers == ["layers.0.activation", "layers.1.activation"]
    for t in (5, 9):
        x = torch.randn(3, t, 16) if batch_first else torch.randn(t, 3, 16)
        enc(x)
        rec.step(labels=torch.tensor([0, 1, 2]))
    s = rec.stats("layers.0.activation")
    assert s is not None and s.units == 24 and s.samples == 6
    assert rec.layout["layers.0.activation"] == ("N,T,D" if batch_first else "T,N,D")
    _, y = rec.samples("layers.0.activation")
    assert sorted(y.tolist()) == [0, 0, 1, 1, 2, 2]
    rec.detach()
    # functional activation: the fallback takes the whole blocks
    plain = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 24, batch_first=True), 2,
                                  enable_nested_tensor=False)
    with repdiag.attach(plain, metrics=None) as rec:
        assert rec.layers == ["layers.0", "layers.1"]


def test_gpt2_fallback_takes_conv1d() -> None:
    model = _gpt2()
    with repdiag.attach(model, lambda n, m: type(m).__name__ == "Conv1D", metrics=None) as rec:
        model(input_ids=_ids(2, 6))
        assert rec.stats("h.0.mlp.c_fc").units == 64 and rec.layout["h.0.mlp.c_fc"] == "N,T,D"
    from repdiag.capture._select import _auto

    no_acts = [(n, m) for n, m in model.named_modules() if "act" not in n]
    assert "h.0.mlp.c_fc" in _auto(no_acts) or "h.0" in _auto(no_acts)


@pytest.mark.parametrize("reduce", ["mean", "positions"])
def test_padded_tokens_excluded_under_mask(reduce: str) -> None:
    torch.manual_seed(0)
    model = _bert().eval()
    ids = _ids(3, 8)
    mask = torch.ones(3, 8, dtype=torch.long)
    mask[0, 5:] = 0
    mask[2, 2:] = 0
    name = "encoder.layer.0.intermediate.intermediate_act_fn"
    seen = {}
    h = model.get_submodule(name).register_forward_hook(lambda m, a, o: seen.setdefault("x", o.detach().clone()))
    rec = repdiag.attach(model, name, reduce=reduce, metrics=None)
    model(input_ids=ids, attention_mask=mask)  # picked from the forward's keyword arguments
    rec.step(labels=torch.tensor([4, 5, 6]))
    h.remove()
    x, keep = seen["x"], mask.bool()
    tokens = x[keep].double()  # (real tokens, 24), by hand
    s = rec.stats(name)
    assert s is not None and s.entries_per_unit == int(keep.sum()) and s.samples == 3
    torch.testing.assert_close(s.mean, tokens.mean(0))
    torch.testing.assert_close(s.var(), tokens.var(0, correction=0))
    torch.testing.assert_close(s.max, tokens.max(0).values)
    rows, y = rec.samples(name)
    if reduce == "mean":
        want = torch.stack([x[i][keep[i]].mean(0) for i in range(3)])
        torch.testing.assert_close(rows, want)
        assert y.tolist() == [4, 5, 6]
    else:
        torch.testing.assert_close(rows, x[keep])
        assert y.tolist() == [4] * 5 + [5] * 8 + [6] * 2  # sequence labels broadcast to real tokens
    rec.detach()


def test_set_mask_overrides_and_masked_block() -> None:
    model = _gpt2().eval()
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    with repdiag.attach(model, "h.0.mlp.act", metrics=None) as rec:
        with rec.masked(mask):
            model(_ids(2, 4))
        assert rec.stats("h.0.mlp.act").entries_per_unit == 7
        model(_ids(2, 4))  # no mask now
        assert rec.stats("h.0.mlp.act").entries_per_unit == 15
        with pytest.raises(repdiag.RepdiagError, match="2-D"):
            rec.set_mask(torch.ones(2, 4, 1))


@pytest.mark.parametrize("factory", [_bert, _gpt2, _t5])
def test_training_with_attach_bitwise(factory) -> None:
    torch.manual_seed(0)
    base = factory()
    ids, mask = _ids(4, 9), torch.ones(4, 9, dtype=torch.long)
    mask[1, 6:] = 0

    def train(model: nn.Module, rec: repdiag.Recorder | None) -> list[torch.Tensor]:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        torch.manual_seed(1)
        for _ in range(3):
            opt.zero_grad()
            out = model(input_ids=ids, attention_mask=mask).last_hidden_state
            out.square().mean().backward()
            opt.step()
            if rec is not None:
                rec.step(labels=torch.arange(4))
        return [p.detach().clone() for p in model.parameters()]

    plain = train(copy.deepcopy(base), None)
    model = copy.deepcopy(base)
    rec = repdiag.attach(model, reduce="positions", metrics=None)
    hooked = train(model, rec)
    rec.detach()
    assert all(torch.equal(a, b) for a, b in zip(plain, hooked))


def test_model_output_picks_hidden_state_and_says_so() -> None:
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=24, max_position_embeddings=32, num_labels=3)
    outer = nn.ModuleDict({"clf": transformers.BertForSequenceClassification(cfg)})

    class Wrap(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = outer

        def forward(self, ids, labels):
            return self.m["clf"](input_ids=ids, labels=labels)

    model = Wrap()
    with repdiag.attach(model, ["m.clf", "m.clf.bert"], metrics=None) as rec:
        model(_ids(2, 5), torch.tensor([0, 1]))  # the output starts with a 0-dim loss
        assert rec.layout["m.clf"] == "N,D from .logits"
        assert rec.layout["m.clf.bert"] == "N,T,D from .last_hidden_state"
        assert rec.stats("m.clf").units == 3 and rec.stats("m.clf.bert").units == 16


def test_gradient_checkpointing_counted_once() -> None:
    from torch.utils.checkpoint import checkpoint

    class Net(nn.Module):
        def __init__(self, reentrant: bool) -> None:
            super().__init__()
            self.fc, self.act, self.out = nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)
            self.reentrant = reentrant

        def forward(self, x):
            h = checkpoint(lambda t: self.act(self.fc(t)), x, use_reentrant=self.reentrant)
            return self.out(h)

    for reentrant in (False, True):
        model = Net(reentrant)
        x = torch.randn(5, 4, requires_grad=True)
        with repdiag.attach(model, "act", metrics=None) as rec:
            model(x).sum().backward()
            rec.step()
            assert rec.stats("act").samples == 5


def test_input_capture_sees_keyword_inputs() -> None:
    class KW(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 2)

        def forward(self, x):
            return self.fc2(input=torch.relu(self.fc1(x)))

    model = KW()
    with repdiag.attach(model, "fc2", capture="input", metrics=None) as rec:
        model(torch.randn(3, 4))
        assert rec.stats("fc2").units == 6


def test_never_fired_warns_once() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with repdiag.attach(model, "1", metrics=None) as rec:
        with pytest.warns(repdiag.RepdiagWarning, match="none of the 1 attached layers recorded"):
            model.forward = lambda x: model[2](model[0](x))  # type: ignore[method-assign]
            model(torch.randn(2, 4))
            rec.step(labels=torch.tensor([0, 1]))


def test_globs_have_path_semantics() -> None:
    model = _bert()
    with repdiag.attach(model, "encoder.layer.*.output.dense", metrics=None) as rec:
        assert rec.layers == ["encoder.layer.0.output.dense", "encoder.layer.1.output.dense"]
    gpt = _gpt2()
    with repdiag.attach(gpt, "h.*", metrics=None) as rec:
        assert rec.layers == ["h.0", "h.1"]
    with repdiag.attach(gpt, "h.**.act", metrics=None) as rec:
        assert rec.layers == ["h.0.mlp.act", "h.1.mlp.act"]
    with repdiag.attach(gpt, "**.c_fc", metrics=None) as rec:
        assert rec.layers == ["h.0.mlp.c_fc", "h.1.mlp.c_fc"]


def test_per_layer_feature_dim() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
    with repdiag.attach(model, ["0", "1"], feature_dim={"1": 2}, metrics=None) as rec:
        model(torch.randn(2, 3, 5, 6))
        assert rec.stats("0").units == 4 and rec.stats("1").units == 5
        assert rec.layout == {"0": "N,C,H,W", "1": "N,H,C,W"}
    with pytest.raises(repdiag.RepdiagError, match="not recorded layers"):
        repdiag.attach(model, ["0"], feature_dim={"9": 1})
