"""repdiag.checkpoint: every supported format loads into the right weights; untrusted code never runs."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

import repdiag
from repdiag import CheckpointError, ConfigError
from repdiag.checkpoint import checkpoint_format, load_checkpoint, resolve_factory, save_checkpoint
from repdiag.models import small_cnn


class _CreatesFile:
    """Unpickling this calls open(path, "w"): the file appears iff the pickle is executed."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.path, "w"))


def _model(norm: str = "bn", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = small_cnn(norm)
    with torch.no_grad():  # non-default BN statistics, so a wrong load would show
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d | nn.BatchNorm1d):
                mod.running_mean.normal_()
                mod.weight.uniform_(0.5, 1.5)
    return m.eval()


def _same(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0)
    x = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=0, atol=0)


def _write(kind: str, model: nn.Module, path: Path) -> Path:
    sd = model.state_dict()
    if kind == "repdiag":
        return save_checkpoint(model, path.with_suffix(".pt"), factory="repdiag.models:small_cnn", norm="bn")
    if kind == "safetensors_repdiag":
        return save_checkpoint(model, path.with_suffix(".safetensors"), factory="repdiag.models:small_cnn", norm="bn")
    if kind == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path.with_suffix(".safetensors")))
        return path.with_suffix(".safetensors")
    if kind == "torchscript":
        torch.jit.save(torch.jit.script(model), str(path.with_suffix(".ts")))
        return path.with_suffix(".ts")
    wrapped = {
        "state_dict": sd,
        "plain_wrapper": {"state_dict": sd, "epoch": 3},
        "model_wrapper": {"model": sd, "optimizer": {"lr": 0.1}},
        "model_state_dict": {"model_state_dict": sd, "epoch": 3},
        "lightning": {"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 3, "global_step": 10,
                      "pytorch-lightning_version": "2.2.0", "hyper_parameters": {"lr": 0.1}},
        "dataparallel": {f"module.{k}": v for k, v in sd.items()},
    }[kind]
    torch.save(wrapped, path.with_suffix(".pth"))
    return path.with_suffix(".pth")


KINDS_NEEDING_MODEL = ["state_dict", "plain_wrapper", "model_wrapper", "model_state_dict", "lightning",
                       "dataparallel", "safetensors", "torchscript"]


@pytest.mark.parametrize("kind", KINDS_NEEDING_MODEL)
def test_formats_load_the_same_weights(tmp_path: Path, kind: str) -> None:
    model = _model()
    path = _write(kind, model, tmp_path / "ck")
    loaded = load_checkpoint(path, factory="repdiag.models:small_cnn", model_kwargs={"norm": "bn"})
    _same(model, loaded)
    into = load_checkpoint(path, small_cnn("bn"))  # an existing model works too
    _same(model, into)


@pytest.mark.parametrize("kind", ["repdiag", "safetensors_repdiag"])
def test_recorded_factory_needs_no_architecture(tmp_path: Path, kind: str) -> None:
    model = _model()
    loaded = load_checkpoint(_write(kind, model, tmp_path / "ck"))
    _same(model, loaded)


def test_saved_file_loads_with_weights_only(tmp_path: Path) -> None:
    path = save_checkpoint(_model(), tmp_path / "a.pt", factory="repdiag.models:small_cnn", norm="bn")
    obj = torch.load(path, weights_only=True)
    assert obj["repdiag"] == {"factory": "repdiag.models:small_cnn", "kwargs": {"norm": "bn"}}
    assert repdiag.load_checkpoint is load_checkpoint and repdiag.save_checkpoint is save_checkpoint


def test_checkpoint_format_sniffs_content(tmp_path: Path) -> None:
    m = _model()
    assert checkpoint_format(_write("state_dict", m, tmp_path / "a")) == "torch"
    assert checkpoint_format(_write("safetensors", m, tmp_path / "b")) == "safetensors"
    assert checkpoint_format(_write("torchscript", m, tmp_path / "c")) == "torchscript"
    legacy = tmp_path / "legacy.pt"
    torch.save(m.state_dict(), legacy, _use_new_zipfile_serialization=False)
    assert checkpoint_format(legacy) == "pickle"
    _same(m, load_checkpoint(legacy, small_cnn("bn")))


def test_torchscript_without_model_returns_the_script_module(tmp_path: Path) -> None:
    loaded = load_checkpoint(_write("torchscript", _model(), tmp_path / "c"))
    assert isinstance(loaded, torch.jit.ScriptModule)


@pytest.mark.parametrize("legacy", [False, True])
def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path: Path, legacy: bool) -> None:
    target = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _CreatesFile(str(target))}, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(CheckpointError, match="pickled Python objects.*--trust-checkpoint"):
        load_checkpoint(path, small_cnn("bn"))
    assert not target.exists()
    # the file is really dangerous: plain unpickling creates the file
    with open(tmp_path / "raw.pkl", "wb") as f:
        pickle.dump(_CreatesFile(str(tmp_path / "proof.txt")), f)
    with open(tmp_path / "raw.pkl", "rb") as f:
        pickle.load(f).close()
    assert (tmp_path / "proof.txt").exists()


def test_whole_module_pickle_needs_trust(tmp_path: Path) -> None:
    model = _model()
    path = tmp_path / "whole.pt"
    torch.save(model, path)
    with pytest.raises(CheckpointError, match="refused to load it"):
        load_checkpoint(path)
    _same(model, load_checkpoint(path, trust=True))


def test_recorded_foreign_factory_needs_trust(tmp_path: Path) -> None:
    path = tmp_path / "foreign.pt"
    torch.save({"state_dict": _model().state_dict(), "repdiag": {"factory": "os:system", "kwargs": {"command": "x"}}},
               path)
    with pytest.raises(CheckpointError, match="not one of repdiag's built-in models"):
        load_checkpoint(path)


def test_missing_and_unexpected_keys_are_listed_with_prefix_hint(tmp_path: Path) -> None:
    sd = _model().state_dict()
    path = tmp_path / "p.pt"
    torch.save({f"encoder.body.{k}": v for k, v in sd.items()}, path)  # two levels: not fixed automatically
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, small_cnn("bn"))
    msg = str(err.value)
    assert "missing keys:" in msg and "unexpected keys:" in msg and "Only a prefix differs" in msg
    torch.save({f"backbone.{k}": v for i, (k, v) in enumerate(sd.items()) if i % 2 == 0}, path)
    with pytest.raises(CheckpointError, match=r"missing keys: .*\(\d+ in all\)"):  # one level: stripped, half missing
        load_checkpoint(path, small_cnn("bn"))


def test_wrong_architecture_and_shapes(tmp_path: Path) -> None:
    path = _write("state_dict", _model(), tmp_path / "a")
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_checkpoint(path, factory="repdiag.models:mlp")
    with pytest.raises(CheckpointError, match="other shapes"):
        load_checkpoint(path, factory="repdiag.models:small_cnn", model_kwargs={"width": 8})


def test_resolve_factory_from_a_file(tmp_path: Path) -> None:
    f = tmp_path / "arch.py"
    f.write_text("from torch import nn\ndef build(width=3):\n    return nn.Linear(2, width)\n")
    fn = resolve_factory(f"{f}:build")
    assert fn(width=4).out_features == 4
    with pytest.raises(ConfigError, match="has no callable 'nope'"):
        resolve_factory(f"{f}:nope")


def test_save_rejects_unrecordable_kwargs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be a string, number"):
        save_checkpoint(_model(), tmp_path / "a.pt", factory="repdiag.models:small_cnn", norm=torch.zeros(1))
    with pytest.raises(ConfigError, match="module-level function"):
        save_checkpoint(_model(), tmp_path / "a.pt", factory=lambda: None)
    assert not os.path.exists(tmp_path / "a.pt")


def test_decompression_bomb_refused_before_reading(tmp_path: Path) -> None:
    """A small zip checkpoint whose tensors deflate to 80 MB is refused from the zip directory,
    before torch.load decompresses anything: peak RSS grows far less than 80 MB."""
    import subprocess
    import sys
    import zipfile

    import torch

    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(20_000_000)}, plain)
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    plain.unlink()
    assert bomb.stat().st_size < 1_000_000
    code = (
        "import resource, sys\n"
        "import torch\n"
        "from repdiag import CheckpointError\n"
        "from repdiag.checkpoint import read_state_dict\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        f"    sd, _ = read_state_dict({str(bomb)!r})\n"
        "    print('READ', float(sd['w'].sum()))\n"  # without the cap: 80 MB decompressed and touched
        "except CheckpointError as exc:\n"
        "    print('ERR', exc)\n"
        "print('GROWTH_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "ERR" in out and "would decompress to 80 MB" in out and "re-save it" in out, out
    growth_kb = int(out.split("GROWTH_KB")[1])
    assert growth_kb < 20_000, out  # the whole archive would be 80 MB; the zip directory is bytes
