"""``--data`` that cannot be used gives one RepdiagError line and exit 1 (issue 14): string,
complex and date arrays, truncated archives, over-long names, missing keys, wrong shapes; and
labels of every integer dtype are read as the same classes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import repdiag
from repdiag.checkpoint import save_checkpoint
from repdiag.cli import main
from repdiag.cli._data import load_data
from repdiag.models import small_cnn

X = np.zeros((10, 1, 8, 8), np.float32)


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("data")
    save_checkpoint(small_cnn("bn"), d / "good.pt", factory="repdiag.models:small_cnn", norm="bn")
    np.savez(d / "strings.npz", x=np.array([["a", "b"]] * 10), y=np.zeros(10, np.int64))
    np.savez(d / "string_labels.npz", x=X, y=np.array(["cat"] * 10))
    np.savez(d / "complex.npz", x=X.astype(np.complex64))
    np.savez(d / "dates.npz", x=np.zeros((10, 2), "datetime64[s]"))
    np.savez(d / "ok.npz", x=X, y=np.zeros(10, np.int64))
    whole = (d / "ok.npz").read_bytes()
    (d / "truncated.npz").write_bytes(whole[: len(whole) // 2])
    (d / "garbage.npz").write_bytes(b"PK\x03\x04 not really a zip")
    np.savez(d / "labels_only.npz", y=np.zeros(10, np.int64))
    np.savez(d / "flat.npz", x=np.zeros(10, np.float32))
    np.savez(d / "both_labels.npz", x=X, y=np.zeros(10, np.int64), labels=np.zeros(10, np.int64))
    np.savez(d / "short_mask.npz", input_ids=np.zeros((10, 6), np.int64), attention_mask=np.ones((10, 5), np.int64))
    np.savez(d / "ragged.npz", x=X, attention_mask=np.ones((9, 5), np.int64))
    np.savez(d / "frac_labels.npz", x=X, y=np.full(10, 0.5))
    np.savez(d / "token_labels.npz", x=X, y=np.zeros((10, 3), np.int64) + 2)
    np.savez(d / "negative.npz", x=X, y=np.full(10, -100, np.int64))
    np.savez(d / "big_uint.npz", x=X, y=np.full(10, 2**63 + 5, np.uint64))
    torch.save({"x": torch.zeros(10, 1, 8, 8), "y": [1, 2, 3]}, d / "listy.pt")
    torch.save({1: torch.zeros(10, 1, 8, 8)}, d / "intkeys.pt")
    return d


CASES: list[tuple[str, Callable[[Path], list[str]], list[str]]] = [
    ("string-arrays", lambda d: ["--data", str(d / "strings.npz")], ["'x' holds <U1 values", "Encode strings"]),
    ("string-labels", lambda d: ["--data", str(d / "string_labels.npz")], ["'y' holds <U3 values"]),
    ("complex", lambda d: ["--data", str(d / "complex.npz")], ["complex64", "expected numbers"]),
    ("dates", lambda d: ["--data", str(d / "dates.npz")], ["datetime64", "expected numbers"]),
    ("truncated", lambda d: ["--data", str(d / "truncated.npz")], ["is not a readable .npz file", "BadZipFile",
                                                                   "Write it again"]),
    ("garbage", lambda d: ["--data", str(d / "garbage.npz")], ["is not a readable .npz file"]),
    ("name-too-long", lambda d: ["--data", str(d / ("a" * 300 + ".npz"))], ["is not a usable path",
                                                                            "File name too long", "(3"]),
    ("pt-name-too-long", lambda d: ["--data", "b" * 300 + ".pt"], ["is not a usable path"]),
    ("spec-too-long", lambda d: ["--data", "c" * 300 + ".csv"], ["--data must be 'digits'", "That file does not exist"]),
    ("missing-inputs", lambda d: ["--data", str(d / "labels_only.npz")], ["holds ['y']", "expected inputs: 'x'"]),
    ("wrong-ndim", lambda d: ["--data", str(d / "flat.npz")], ["batch axis and at least one feature axis",
                                                               "got shape (10,)"]),
    ("two-label-keys", lambda d: ["--data", str(d / "both_labels.npz")], ["both 'y' and 'labels'"]),
    ("mask-shape", lambda d: ["--data", str(d / "short_mask.npz")], ["attention_mask must have shape (10, 6)",
                                                                     "got (10, 5)"]),
    ("rows-differ", lambda d: ["--data", str(d / "ragged.npz")], ["one row per sample (10",
                                                                 "'attention_mask' has shape (9, 5)"]),
    ("fractional-labels", lambda d: ["--data", str(d / "frac_labels.npz")], ["not whole numbers"]),
    ("token-labels", lambda d: ["--data", str(d / "token_labels.npz")], ["not one-hot", "got shape (10, 3)"]),
    ("negative-labels", lambda d: ["--data", str(d / "negative.npz")], ["class indices >= 0", "minimum of -100"]),
    ("uint64-overflow", lambda d: ["--data", str(d / "big_uint.npz")], ["above 2**63 - 1"]),
    ("pt-list-value", lambda d: ["--data", str(d / "listy.pt")], ["'y' is a list", "expected an array or a tensor"]),
    ("pt-int-keys", lambda d: ["--data", str(d / "intkeys.pt")], ["non-string keys"]),
    ("seed-overflow", lambda d: ["--seed", "99999999999999999999"], ["--seed must be an integer in"]),
    ("seed-negative", lambda d: ["--seed", "-1"], ["--seed must be an integer in [0, 4294967295]"]),
    ("feature-dim", lambda d: ["--feature-dim", "last"], ["--feature-dim must be 'auto' or an integer"]),
]


@pytest.mark.parametrize(("argv", "fragments"), [(a, f) for _, a, f in CASES], ids=[i for i, _, _ in CASES])
def test_bad_data_gives_one_line(d: Path, tmp_path: Path, argv: Callable[[Path], list[str]], fragments: list[str],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["report", str(d / "good.pt"), "--out", str(tmp_path / "out"), "--quiet", "--samples", "8",
                 "--metrics", "sparsity", "--embedding", "none", *argv(d)])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 1, err
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("repdiag report: error: ")
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    assert not (tmp_path / "out").exists()


def test_cases_are_distinct() -> None:
    assert len({i for i, _, _ in CASES}) == len(CASES) >= 20


def test_the_errors_are_data_errors(d: Path) -> None:
    with pytest.raises(repdiag.DataError):
        load_data(str(d / "truncated.npz"), samples=8)
    with pytest.raises(repdiag.ConfigError):
        load_data(str(d / "ok.npz"), samples=8, seed=2**40)


INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.bool_]


@pytest.mark.parametrize("dtype", INT_DTYPES, ids=[np.dtype(t).name for t in INT_DTYPES])
@pytest.mark.parametrize("fmt", ["npz", "pt"])
def test_labels_of_every_integer_dtype(tmp_path: Path, dtype: type, fmt: str) -> None:
    y = (np.arange(10) % (2 if dtype is np.bool_ else 3)).astype(dtype)
    path = tmp_path / f"d.{fmt}"
    if fmt == "npz":
        np.savez(path, x=X, labels=y)
    else:
        torch.save({"x": torch.from_numpy(X), "labels": torch.from_numpy(y)}, path)
    data = load_data(str(path), samples=100)
    assert data.y.dtype == torch.int64
    torch.testing.assert_close(data.y, torch.from_numpy(y.astype(np.int64)))


def test_one_hot_and_integral_float_labels(tmp_path: Path) -> None:
    y = np.arange(10) % 3
    np.savez(tmp_path / "a.npz", x=X, y=np.eye(3, dtype=np.float32)[y])
    np.savez(tmp_path / "b.npz", x=X, y=y.astype(np.float64))
    for name in ("a.npz", "b.npz"):
        torch.testing.assert_close(load_data(str(tmp_path / name), samples=100).y, torch.from_numpy(y))


def test_int16_labels_through_the_cli(tmp_path: Path, d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "i16.npz", x=rng.standard_normal((40, 1, 8, 8)).astype(np.float32),
             y=(np.arange(40) % 4).astype(np.int16))
    code = main(["report", str(d / "good.pt"), "--data", str(tmp_path / "i16.npz"), "--out", str(tmp_path / "o"),
                 "--quiet", "--metrics", "silhouette_labels", "--embedding", "none"])
    assert code == 0, capsys.readouterr().err
    t = repdiag.tables.read_table(tmp_path / "o" / "table.csv")
    assert (t.metric == "silhouette_labels").sum() > 0 and t.loc[t.metric == "silhouette_labels", "value"].notna().all()
