"""``repdiag report DIR`` on a Hugging Face ``save_pretrained`` directory (a tiny BERT classifier
built from a small config with random weights; nothing is downloaded), token-id data with an
attention mask, the capture options, and the error cases."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import repdiag
from repdiag.cli import main
from repdiag.cli._data import load_data
from repdiag.cli._evaluate import evaluate

transformers = pytest.importorskip("transformers")

N, T, WIDTH, INTER = 40, 10, 16, 32
ACT = "bert.encoder.layer.*.intermediate.intermediate_act_fn"


def tiny_bert() -> nn.Module:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=INTER, max_position_embeddings=32, num_labels=3)
    return transformers.BertForSequenceClassification(cfg)


@pytest.fixture(scope="module")
def hf(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hf")
    model = tiny_bert()
    model.save_pretrained(d / "bert")
    g = np.random.default_rng(0)
    ids = g.integers(1, 50, size=(N, T)).astype(np.int64)
    mask = np.ones((N, T), np.int64)
    for i, length in enumerate(g.integers(3, T + 1, size=N)):
        mask[i, length:] = 0
        ids[i, length:] = 0
    assert (mask == 0).any()
    np.savez(d / "tok.npz", input_ids=ids, attention_mask=mask, labels=(np.arange(N) % 3).astype(np.int32))
    torch.save({"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}, d / "tok.pt")
    return {"dir": d, "bert": d / "bert", "npz": d / "tok.npz", "pt": d / "tok.pt"}


def test_report_on_a_save_pretrained_bert(hf: dict[str, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["report", str(hf["bert"]), "--data", str(hf["npz"]), "--layers", ACT, "--feature-dim", "-1",
                 "--embedding", "none", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "bert.encoder.layer.1.intermediate.intermediate_act_fn" in captured.out  # the terminal table
    t = repdiag.tables.read_table(out / "table.csv")
    acts = {f"bert.encoder.layer.{i}.intermediate.intermediate_act_fn" for i in range(2)}
    assert acts <= set(t.layer)
    sub = t[t.layer.isin(acts) & (t.metric == "sparsity")]
    assert len(sub) == 2 and (sub.n == N).all() and sub.value.notna().all()
    assert (t[t.layer.isin(acts)].module == "GELUActivation").all()
    sil = t[t.layer.isin(acts) & (t.metric == "silhouette_labels")]
    assert len(sil) == 2 and sil.value.notna().all()  # the int32 labels arrived
    ln = t[t.module == "LayerNorm"]
    assert set(ln.metric) >= {"gamma_below", "gamma_mean", "beta_mean"}  # the gamma table of BERT's LayerNorms
    assert (out / "report.html").is_file()


def test_tokens_keep_their_dtype_and_the_mask_reaches_forward(hf: dict[str, Path]) -> None:
    data = load_data(str(hf["npz"]), samples=N)
    assert data.x_name == "input_ids" and data.x.dtype == torch.int64 and data.mask is not None
    seen: list[dict[str, torch.Tensor]] = []

    class Spy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(50, 4)
            self.act = nn.ReLU()

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            seen.append({"input_ids": input_ids, "attention_mask": attention_mask})
            return self.act(self.emb(input_ids) * attention_mask[..., None])

    r = evaluate(Spy(), data, name="spy", layers=["act"], metrics=["sparsity"], batch_size=16,
                 capture_options={"feature_dim": -1})
    assert [b["input_ids"].shape[0] for b in seen] == [16, 16, 8]
    assert all(b["input_ids"].dtype == torch.int64 for b in seen)
    torch.testing.assert_close(torch.cat([b["attention_mask"] for b in seen]), data.mask)
    assert r.samples["act"][0].shape == (N, 4)  # feature_dim=-1: units are the embedding width


def test_capture_options_reach_attach(hf: dict[str, Path]) -> None:
    from repdiag.cli._hf import load_hf

    model = load_hf(hf["bert"])
    assert type(model).__name__ == "BertForSequenceClassification"
    torch.testing.assert_close(model.state_dict()["classifier.weight"], tiny_bert().state_dict()["classifier.weight"])
    data = load_data(str(hf["pt"]), samples=N)
    layer = "bert.encoder.layer.0.intermediate.intermediate_act_fn"
    r = evaluate(model, data, name="b", layers=[layer], metrics=["sparsity"], capture_options={"feature_dim": -1})
    assert r.samples[layer][0].shape == (N, INTER)  # the true feature width
    r2 = evaluate(model, data, name="b", layers=[layer], metrics=["sparsity"],
                  capture_options={"feature_dim": -1, "reduce": "positions"})
    x2 = r2.samples[layer][0]  # token rows, a reservoir of N of them (max_samples = the samples run)
    assert x2.shape == (N, INTER) and not torch.equal(x2, r.samples[layer][0])
    r3 = evaluate(model, data, name="b", layers=[layer], metrics=["sparsity"],
                  capture_options={"capture": "input", "feature_dim": -1})
    assert r3.samples[layer][0].shape == (N, INTER)
    assert not torch.equal(r3.samples[layer][0], r.samples[layer][0])  # GELU's input, not its output
    assert set(r.gammas) >= {"bert.embeddings.LayerNorm"}


def _one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_without_transformers_says_how_to_install(hf: dict[str, Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now raises ImportError
    line = _one_line(["report", str(hf["bert"]), "--data", str(hf["npz"]), "--quiet", "--out", str(tmp_path / "o")],
                     capsys)
    assert "needs the optional package transformers" in line and "pip install repdiag[hf]" in line


@pytest.mark.parametrize("case,fragment", [
    ("no-weights", "holds config.json but no weights"),
    ("bad-json", "is not a readable JSON config"),
    ("remote-code", "names its own model code (auto_map)"),
    ("weights-of-another-head", "lacks 2 weight(s) of BertForSequenceClassification"),
    ("unknown-model-type", "could not be loaded"),
])
def test_broken_directories(hf: dict[str, Path], tmp_path: Path, case: str, fragment: str,
                            capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "m"
    shutil.copytree(hf["bert"], d)
    cfg = json.loads((d / "config.json").read_text())
    if case == "no-weights":
        (d / "model.safetensors").unlink()
    elif case == "bad-json":
        (d / "config.json").write_text("{not json")
    elif case == "remote-code":
        cfg["auto_map"] = {"AutoModel": "evil.EvilModel"}
        (d / "config.json").write_text(json.dumps(cfg))
    elif case == "weights-of-another-head":
        shutil.rmtree(d)
        transformers.BertModel(tiny_bert().config).save_pretrained(d)  # no classifier weights
        cfg = json.loads((d / "config.json").read_text())
        cfg["architectures"] = ["BertForSequenceClassification"]
        (d / "config.json").write_text(json.dumps(cfg))
    elif case == "unknown-model-type":
        cfg["model_type"] = "no-such-model-type"
        cfg["architectures"] = ["NoSuchModel"]
        (d / "config.json").write_text(json.dumps(cfg))
    capsys.readouterr()  # what save_pretrained printed
    line = _one_line(["report", str(d), "--data", str(hf["npz"]), "--quiet", "--embedding", "none",
                      "--metrics", "sparsity", "--out", str(tmp_path / "o")], capsys)
    assert line.startswith("repdiag report: error: ") and fragment in line, line


def test_token_data_that_does_not_fit_the_model(hf: dict[str, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    np.savez(tmp_path / "big.npz", input_ids=np.full((4, T), 999, np.int64), attention_mask=np.ones((4, T), np.int64))
    line = _one_line(["report", str(hf["bert"]), "--data", str(tmp_path / "big.npz"), "--quiet", "--embedding",
                      "none", "--metrics", "sparsity", "--out", str(tmp_path / "o")], capsys)
    assert "input_ids (4, 10) int64, attention_mask (4, 10) int64" in line and "does not fit model 'bert'" in line
    np.savez(tmp_path / "named.npz", pixels=np.zeros((4, 3), np.float32))
    line = _one_line(["report", str(hf["bert"]), "--data", str(tmp_path / "named.npz"), "--quiet", "--embedding",
                      "none", "--out", str(tmp_path / "o")], capsys)
    assert "holds input(s) 'pixels'" in line or "does not fit model" in line


def test_default_layers_are_the_block_activations_at_feature_width(hf: dict[str, Path]) -> None:
    from repdiag.cli._hf import load_hf

    r = evaluate(load_hf(hf["bert"]), load_data(str(hf["npz"]), samples=N), name="b", metrics=["sparsity"])
    acts = [f"bert.encoder.layer.{i}.intermediate.intermediate_act_fn" for i in range(2)]
    assert set(acts) <= set(r.layers)
    assert all(r.samples[a][0].shape == (N, INTER) for a in acts)
