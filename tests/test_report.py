"""``repdiag report`` end to end, on checkpoints of every supported format written here: the HTML
parses, holds the plots and both runs, table.csv follows the schema, names are escaped."""

from __future__ import annotations

import base64
import html.parser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from repdiag.checkpoint import save_checkpoint
from repdiag.cli import main
from repdiag.models import he_init, small_cnn
from repdiag.tables import CORE_COLUMNS, read_table

FAST = ["--quiet", "--samples", "120", "--metrics", "sparsity,silhouette_labels,gamma", "--embedding", "none"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Parsed(html.parser.HTMLParser):
    """Collects images, text and the open/close balance of an HTML document."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[bytes] = []
        self.text: list[str] = []
        self.tags: list[str] = []
        self.scripts = 0
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "script":
            self.scripts += 1
        if tag == "img":
            src = dict(attrs).get("src") or ""
            assert src.startswith("data:image/png;base64,"), src[:40]  # self-contained: no external files
            self.images.append(base64.b64decode(src.split(",", 1)[1]))
        elif tag not in ("meta", "br", "hr", "link"):
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(path: Path) -> _Parsed:
    p = _Parsed()
    p.feed(path.read_text(encoding="utf-8"))
    p.close()
    assert p.stack == [], f"unclosed tags {p.stack}"
    return p


def _trained(norm: str) -> nn.Module:
    return he_init(small_cnn(norm), torch.Generator().manual_seed(1)).eval()


def _write(kind: str, model: nn.Module, norm: str, d: Path) -> tuple[Path, list[str]]:
    """A checkpoint of ``kind`` and the extra CLI arguments it needs."""
    spec = ["--model", "repdiag.models:small_cnn", "--model-kwargs", f'{{"norm": "{norm}"}}']
    if kind == "repdiag":
        return save_checkpoint(model, d / f"{norm}.pt", factory="repdiag.models:small_cnn", norm=norm), []
    if kind == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / f"{norm}.safetensors"))
        return d / f"{norm}.safetensors", spec
    if kind == "torchscript":
        torch.jit.save(torch.jit.script(model), str(d / f"{norm}.ts"))
        return d / f"{norm}.ts", spec
    if kind == "lightning":
        torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "epoch": 1},
                   d / f"{norm}.ckpt")
        return d / f"{norm}.ckpt", spec
    torch.save({"model_state_dict": model.state_dict()}, d / f"{norm}.pth")
    return d / f"{norm}.pth", spec


@pytest.mark.parametrize("kind", ["repdiag", "safetensors", "torchscript", "lightning", "state_dict"])
def test_report_end_to_end_per_format(tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    paths, extra_bn, extra_nobn = [], [], []
    for norm in ("bn", "none"):
        p, extra = _write(kind, _trained(norm), norm, tmp_path)
        paths.append(str(p))
        (extra_bn if norm == "bn" else extra_nobn).extend(extra)
    models = []
    if extra_bn:  # one --model / --model-kwargs per checkpoint
        models = ["--model", extra_bn[1], "--model", extra_nobn[1], "--model-kwargs", extra_bn[3],
                  "--model-kwargs", extra_nobn[3]]
    out = tmp_path / "out"
    assert main(["report", *paths, *models, "--out", str(out), "--names", "bn,nobn", *FAST]) == 0
    assert "report.html" in capsys.readouterr().out
    doc = parse(out / "report.html")
    text = " ".join(doc.text)
    assert "bn" in text and "nobn" in text
    assert doc.scripts == 0
    assert len(doc.images) >= 3  # sparsity and silhouette against depth, gamma histogram
    assert all(img.startswith(PNG_MAGIC) for img in doc.images)
    table = read_table(out / "table.csv")
    assert list(table.columns[:len(CORE_COLUMNS)]) == list(CORE_COLUMNS)
    assert set(table["run"]) == {"bn", "nobn"}
    assert {"sparsity", "silhouette_labels"} <= set(table["metric"])
    sparsity = table[table["metric"] == "sparsity"]
    assert set(sparsity["layer"]) == {"2", "5", "9", "14"} and len(sparsity) == 2 * 4  # the ReLUs of both runs
    assert sparsity["value"].between(0, 1).all()
    assert set(table.loc[table["metric"].str.startswith("gamma"), "run"]) == {"bn"}  # BN rows only where BN is
    assert (out / "report.md").read_text().count("![") == len(doc.images)


def test_report_values_match_direct_attach(tmp_path: Path) -> None:
    import repdiag
    from repdiag.cli._data import load_data

    model = _trained("bn")
    ck = save_checkpoint(model, tmp_path / "bn.pt", factory="repdiag.models:small_cnn", norm="bn")
    assert main(["report", str(ck), "--out", str(tmp_path / "o"), *FAST]) == 0
    table = read_table(tmp_path / "o" / "table.csv")
    data = load_data("digits", samples=120)
    with repdiag.attach(model, metrics=["sparsity"], max_samples=1000) as rec, torch.no_grad():
        model(data.x)
        rec.step(labels=data.y)
        want = rec.table().set_index("layer")["value"]
    got = table[table["metric"] == "sparsity"].set_index("layer")["value"]
    torch.testing.assert_close(torch.tensor(got.loc[want.index].to_numpy()), torch.tensor(want.to_numpy()))


def test_default_metrics_and_pca_embedding(tmp_path: Path) -> None:
    from repdiag.metrics import default_metrics

    paths = [str(save_checkpoint(_trained(n), tmp_path / f"{n}.pt", factory="repdiag.models:small_cnn", norm=n))
             for n in ("bn", "none")]
    out = tmp_path / "out"
    assert main(["report", *paths, "--out", str(out), "--quiet", "--samples", "150", "--embedding", "pca"]) == 0
    table = read_table(out / "table.csv")
    assert set(table["metric"]) >= {m for m in default_metrics() if m != "nonfinite"} - {"gamma"}
    assert set(table["run"]) == {"bn", "none"}
    doc = parse(out / "report.html")
    assert any("PCA" in t for t in doc.text)
    assert (out / "plots" / "embedding_pca.png").read_bytes() in doc.images


def test_script_layer_names_are_escaped(tmp_path: Path) -> None:
    arch = tmp_path / "arch.py"
    arch.write_text(
        "from torch import nn\n"
        "def build():\n"
        "    m = nn.Sequential()\n"
        "    m.add_module('fc', nn.Linear(64, 16))\n"
        "    m.add_module('<script>alert(1)</script>', nn.ReLU())\n"
        "    m.add_module('out', nn.Linear(16, 10))\n"
        "    return m\n"
    )
    from repdiag.checkpoint import resolve_factory

    model = resolve_factory(f"{arch}:build")()
    torch.save(model.state_dict(), tmp_path / "evil<b>name.pt")
    data = tmp_path / "d.npz"
    np.savez(data, x=np.random.default_rng(0).normal(size=(80, 64)).astype(np.float32),
             y=np.arange(80) % 4)
    out = tmp_path / "out"
    assert main(["report", str(tmp_path / "evil<b>name.pt"), "--model", f"{arch}:build", "--data", str(data),
                 "--out", str(out), *FAST]) == 0
    raw = (out / "report.html").read_text()
    assert "<script>" not in raw and "evil<b>name" not in raw and "evil&lt;b&gt;name" in raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in raw
    doc = parse(out / "report.html")
    assert doc.scripts == 0
    assert "<script>alert(1)</script>" in " ".join(doc.text)  # shown as text
    assert "<script>" not in (out / "report.md").read_text()


def test_different_architectures_matched_by_forward_order(tmp_path: Path) -> None:
    from repdiag.models import mlp

    a = save_checkpoint(mlp("bn", depth=3, in_features=64), tmp_path / "mlp.pt", factory="repdiag.models:mlp",
                        norm="bn", depth=3, in_features=64)
    b = save_checkpoint(_trained("bn"), tmp_path / "cnn.pt", factory="repdiag.models:small_cnn", norm="bn")
    out = tmp_path / "out"
    assert main(["report", str(a), str(b), "--out", str(out), *FAST]) == 0
    text = " ".join(parse(out / "report.html").text)
    assert "matched by role and forward order" in text
    table = read_table(out / "table.csv")  # the table keeps each run's real names
    assert "14" in set(table.loc[table["run"] == "cnn", "layer"]) and "14" not in set(table.loc[table["run"] == "mlp", "layer"])


def test_match_tables_aligns_shifted_indices_by_role_and_order() -> None:
    from repdiag.report import match_tables
    from repdiag.tables import make_table

    def rows(run: str, layers: list[tuple[str, str]]) -> pd.DataFrame:
        return make_table([{"run": run, "layer": lay, "module": mod, "depth": i, "metric": "m", "value": 1.0}
                           for i, (lay, mod) in enumerate(layers)])

    same = match_tables([rows("a", [("x.1", "ReLU"), ("x.3", "ReLU")]), rows("b", [("x.1", "ReLU"), ("x.3", "ReLU")])])
    assert same.how == "name" and same.renames == {} and same.note == "" and same.order == ["x.1", "x.3"]
    bn = rows("bn", [("f.1", "BatchNorm1d"), ("f.2", "ReLU"), ("f.4", "BatchNorm1d"), ("f.5", "ReLU")])
    diff = match_tables([bn, rows("nobn", [("f.1", "ReLU"), ("f.3", "ReLU")])])
    assert diff.how == "order" and "role and forward order" in diff.note
    assert diff.renames["nobn"] == {"f.1": "f.2", "f.3": "f.5"}  # ReLU with ReLU, never with a BatchNorm
    assert diff.order == ["f.1", "f.2", "f.4", "f.5"]
    frame = pd.DataFrame({"run": ["bn", "nobn"], "layer": ["f.5", "f.3"]})
    assert diff.apply(frame)["layer"].tolist() == ["f.5", "f.5"]
    assert diff.alignment is not None and set(diff.alignment.columns) >= {"run", "layer", "key", "how"}


def test_format_value() -> None:
    from repdiag.report import format_value

    assert [format_value(v) for v in (0.123456, 3.0, float("nan"), None, True, 12345678.0)] == [
        "0.1235", "3", "nan", "-", "True", "1.235e+07"]


@pytest.mark.slow
def test_umap_embedding_separates_blobs() -> None:
    """UMAP on a small sample (about 7 s with numba's on-disk cache warm, about 30 s cold)."""
    from repdiag.report import embed, numba_cache_dir

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.1, (40, 16)), rng.normal(5, 0.1, (40, 16))])
    xy = embed(x, "umap", seed=0)
    assert xy.shape == (80, 2) and np.isfinite(xy).all()
    assert numba_cache_dir().exists()
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    nearest = d.argmin(1)
    assert ((nearest < 40) == (np.arange(80) < 40)).all()  # every point's neighbour is from its own blob
    pca = embed(x, "pca")
    torch.testing.assert_close(torch.tensor(np.abs(pca[:, 0]).mean()), torch.tensor(np.sqrt(16 * 2.5 ** 2)),
                               rtol=0.05, atol=0)
