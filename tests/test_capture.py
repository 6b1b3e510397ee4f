"""The capture engine: buffers, labels, reductions, streaming statistics, schedule, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import repdiag
from repdiag import ConfigError, LayerNotFoundError, RepdiagError, ShapeError
from repdiag.capture import HIST_BINS, Reservoir, StreamingStats

from ._archs import ARCHS
from .conftest import DEVICES


def zero_hist(zero: torch.Tensor) -> torch.Tensor:
    """The per-sample zero-fraction histogram of a (samples, entries) zero mask, from its
    definition: bin round(1000 z / e), halves up (exact: Fractions)."""
    from fractions import Fraction
    from math import floor

    e = zero.shape[1]
    bins = [floor(Fraction(int(z) * (HIST_BINS - 1), e) + Fraction(1, 2)) for z in zero.sum(1).tolist()]
    return torch.bincount(torch.tensor(bins, dtype=torch.int64), minlength=HIST_BINS).to(zero.device)


class LabelEcho(nn.Module):
    """Maps a batch of labels to activations that encode them, so we can check the pairing."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x)


def test_labels_stay_with_their_rows() -> None:
    model = LabelEcho()
    with repdiag.attach(model, "act", max_samples=37, metrics=None, seed=3) as rec:
        for _ in range(25):
            y = torch.randint(0, 1000, (11,))
            model(y.float()[:, None].repeat(1, 3))
            rec.step(labels=y)
        x, lab = rec.samples("act")
    assert x.shape == (37, 3)
    torch.testing.assert_close(x[:, 0], lab.float())


def test_positions_broadcast_labels_and_flatten_shape() -> None:
    conv = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU())
    x = torch.randn(4, 2, 5, 5)
    y = torch.tensor([0, 1, 2, 3])
    with repdiag.attach(conv, "1", reduce="positions", max_samples=1000, metrics=None) as rec:
        out = conv(x)
        rec.step(labels=y)
        rows, lab = rec.samples("1")
    assert rows.shape == (4 * 25, 3)
    torch.testing.assert_close(rows, out.permute(0, 2, 3, 1).reshape(-1, 3))
    torch.testing.assert_close(lab, y.repeat_interleave(25))
    with repdiag.attach(conv, "1", reduce="flatten", metrics=None) as rec:
        out = conv(x)
        rec.step(labels=y)
        rows, _ = rec.samples("1")
    torch.testing.assert_close(rows, out.reshape(4, -1))
    with repdiag.attach(conv, "1", reduce="mean", metrics=None) as rec:
        out = conv(x)
        rows, lab = rec.samples("1")
    torch.testing.assert_close(rows, out.mean(dim=(2, 3)))
    assert (lab == -1).all()  # no labels given yet


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_streaming_stats_equal_direct_computation(device: str, dtype: torch.dtype, conv_path: str) -> None:
    relu = nn.ReLU()
    batches = [torch.randn(n, 4, 3, 5, device=device, dtype=dtype) + 0.3 for n in (7, 1, 12)]
    batches[1][0, 2] = 0.0  # one whole map zero
    with repdiag.attach(nn.Sequential(relu), "0", metrics=None) as rec:
        outs = []
        for b in batches:
            outs.append(rec.model(b))
            rec.step()
        s = rec.stats("0")
    assert s is not None
    full = torch.cat(outs).double()  # (N, C, H, W)
    per_unit = full.transpose(0, 1).reshape(4, -1)
    assert s.samples == 20 and s.entries_per_unit == 20 * 15 and s.batches == 3
    torch.testing.assert_close(s.zeros.cpu(), (per_unit == 0).sum(1).cpu())
    torch.testing.assert_close(s.zero_maps.cpu(), (full == 0).all(dim=3).all(dim=2).sum(0).cpu())
    tol = {"rtol": 1e-2, "atol": 1e-2} if dtype == torch.bfloat16 else {"rtol": 1e-6, "atol": 1e-6}
    torch.testing.assert_close(s.mean.cpu(), per_unit.mean(1).cpu(), **tol)
    torch.testing.assert_close(s.var().cpu(), per_unit.var(1, correction=0).cpu(), **tol)
    torch.testing.assert_close(s.min.cpu(), per_unit.min(1).values.cpu())
    torch.testing.assert_close(s.max.cpu(), per_unit.max(1).values.cpu())
    expect = zero_hist((full == 0).reshape(20, -1))
    torch.testing.assert_close(s.sample_zero_hist.cpu(), expect.cpu())
    assert s.mean.device.type == torch.device(device).type
    assert int(s.nonfinite.sum()) == 0


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "chunked_eps"])
def test_streaming_stats_chunked_conv_reductions(monkeypatch: pytest.MonkeyPatch, layout: str, conv_path: str) -> None:
    """On CPU the eager path reduces conv maps in chunks of whole samples; several chunks with a
    partial last one, channels-last input and an eps threshold give the statistics of the whole
    batch, and so does the C kernel (one pass, no chunks)."""
    from repdiag.capture import _stats

    monkeypatch.setattr(_stats, "CPU_CHUNK", 3 * 5 * 6 * 7)  # 3 samples of (5, 6, 7) per chunk
    g = torch.Generator().manual_seed(3)
    x = torch.relu(torch.randn(11, 5, 6, 7, generator=g))  # 4 chunks, the last holding 2 samples
    x[4, 1] = 0.0
    x[9, 3, :2] = 1e-4  # zero only when eps > 0
    eps = 1e-3 if layout == "chunked_eps" else 0.0
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    s = StreamingStats(5, torch.device("cpu"), eps=eps)
    means = s.update(x)
    ref = x.double().transpose(0, 1).reshape(5, -1)
    zero = x.abs() <= eps
    torch.testing.assert_close(means, x.double().mean(dim=(2, 3)), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(s.zeros, zero.transpose(0, 1).reshape(5, -1).sum(1))
    torch.testing.assert_close(s.zero_maps, zero.flatten(2).all(2).sum(0))
    torch.testing.assert_close(s.mean, ref.mean(1), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(s.var(), ref.var(1, correction=0), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(s.min, ref.min(1).values)
    torch.testing.assert_close(s.max, ref.max(1).values)
    expect = zero_hist(zero.reshape(11, -1))
    torch.testing.assert_close(s.sample_zero_hist, expect)


def test_streaming_stats_welford_is_stable() -> None:
    """A large offset does not destroy the variance (naive sum-of-squares would)."""
    s = StreamingStats(2, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    chunks = [1e6 + torch.randn(50, 2, generator=g) for _ in range(20)]
    for c in chunks:
        s.update(c.float())
    ref = torch.cat(chunks).float().double()
    torch.testing.assert_close(s.var(), ref.var(0, correction=0), rtol=1e-2, atol=0)


def test_nonfinite_counted(conv_path: str) -> None:
    x = torch.randn(5, 3, 2, 2)
    x[1, 0, 0, 0] = float("nan")
    x[2, 2, 1, 1] = float("inf")
    s = StreamingStats(3, torch.device("cpu"))
    s.update(x)
    torch.testing.assert_close(s.nonfinite, torch.tensor([1, 0, 1]))
    assert s.min[0].isnan() and s.max[0].isnan()  # as torch.amin/amax: a NaN entry poisons the extremes
    assert s.max[2] == float("inf") and torch.isfinite(s.min[2]) and s.min[1:].isfinite().all()


def test_no_host_sync_in_hooked_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    for arch in ("sequential_cnn", "resnet_functional", "lstm", "transformer"):
        factory, make_x = ARCHS[arch]
        model = factory()
        x = make_x()
        rec = repdiag.attach(model, lambda n, m: len(list(m.children())) == 0, max_samples=4, reduce="mean")
        model(x)  # first call allocates
        rec.step(labels=torch.zeros(x.shape[0], dtype=torch.long))

        def boom(*a: object, **k: object) -> None:
            raise AssertionError("host synchronisation inside a hook")

        with monkeypatch.context() as m:
            for name in ("item", "cpu", "tolist", "numpy", "__bool__", "__int__", "__float__"):
                m.setattr(torch.Tensor, name, boom)
            for _ in range(3):  # the reservoir is full after the first: random replacement path
                model(x)
        rec.step(labels=torch.zeros(x.shape[0], dtype=torch.long))
        rec.detach()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA's sync-debug mode needs a CUDA device")
def test_no_cuda_sync_in_hooked_forward() -> None:
    """On a GPU nothing in the hooks or in step() waits for the device."""
    from repdiag.models import cifar_cnn

    model = cifar_cnn("bn").cuda()
    x = torch.randn(16, 3, 32, 32, device="cuda")
    y = torch.randint(0, 10, (16,), device="cuda")
    rec = repdiag.attach(model, max_samples=8)  # the reservoir fills on the first call
    model(x)
    rec.step(labels=y)  # the first call allocates buffers and infers layouts
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            model(x)
            rec.step(labels=y)
    finally:
        torch.cuda.set_sync_debug_mode(0)
        rec.detach()


def test_memory_is_bounded_by_configuration() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU())
    rec = repdiag.attach(model, max_samples=64, metrics=None)
    for i in range(1000):
        model(torch.randn(16, 4))
        rec.step(labels=torch.zeros(16, dtype=torch.long))
        if i == 9:
            after_10 = rec.memory_bytes()
            tensors_10 = [id(lay.reservoir.data) for lay in rec._layers.values()]
    assert rec.memory_bytes() == after_10
    assert [id(lay.reservoir.data) for lay in rec._layers.values()] == tensors_10
    assert all(lay.reservoir.filled == 64 for lay in rec._layers.values())
    rec.detach()


def test_pending_slots_reuse_their_buffers() -> None:
    """The slots kept from the forward pass to step() live in buffers reused across steps (fresh
    ones fragment the host heap), at most MAX_PENDING a layer when step() is never called, and
    the labels still land on the right rows."""
    from repdiag.capture._hooks import MAX_PENDING

    model = LabelEcho()
    rec = repdiag.attach(model, "act", max_samples=8, metrics=None)
    layer = rec._layers["act"]
    ptrs = set()
    for i in range(20):
        y = torch.randint(0, 100, (5,))
        model(y.float()[:, None])
        ptrs.add(layer.pending[0].slots.data_ptr())
        if i % 3 == 2:  # a second, smaller call in the step: buffers of two sizes in the pool
            model(torch.randint(0, 100, (3,)).float()[:, None])
            rec.step()  # calls of different sizes take no labels: these rows stay unlabelled
        else:
            rec.step(labels=y)
        x, lab = rec.samples("act")
        torch.testing.assert_close(x[:, 0][lab >= 0], lab[lab >= 0].float())
    assert len(ptrs) == 1
    for _ in range(MAX_PENDING + 10):  # no step(): the oldest calls are dropped, buffers recycled
        model(torch.randn(5, 1))
    assert len(layer.pending) == MAX_PENDING and len(layer._spare) <= MAX_PENDING
    rec.step()
    assert not layer.pending and len(layer._spare) <= MAX_PENDING
    rec.detach()


def test_reservoir_is_uniform() -> None:
    """Each of 100 rows offered in batches of 7 is kept with probability 10/100."""
    n_rows, k, seeds = 100, 10, 3000
    counts = torch.zeros(n_rows)
    rows = torch.arange(n_rows, dtype=torch.float32)[:, None]
    for seed in range(seeds):
        r = Reservoir(k, seed=seed)
        for i in range(0, n_rows, 7):
            r.offer(rows[i:i + 7])
        kept, _ = r.rows()
        assert kept.shape == (k, 1) and len(kept.unique()) == k  # without replacement
        counts[kept[:, 0].long()] += 1
    freq = counts / seeds
    p = k / n_rows
    sd = (p * (1 - p) / seeds) ** 0.5
    assert float((freq - p).abs().max()) < 5 * sd, freq
    # chi-square over rows (approximately independent): mean squared z near 1
    z2 = (((freq - p) / sd) ** 2).mean()
    assert 0.6 < float(z2) < 1.5


def test_reservoir_reproducible_given_seed() -> None:
    def run(seed: int) -> torch.Tensor:
        r = Reservoir(5, seed=seed)
        for i in range(10):
            r.offer(torch.arange(i * 4, i * 4 + 4, dtype=torch.float32)[:, None])
        return r.rows()[0]

    torch.testing.assert_close(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_schedule_every_and_paused() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    rec = repdiag.attach(model, every=3, metrics=None)
    for _ in range(9):  # due on steps 0, 3, 6
        model(torch.randn(2, 3))
        rec.step()
    assert rec.stats("1").batches == 3
    with rec.paused():
        assert not rec.due
        model(torch.randn(2, 3))
    assert rec.stats("1").batches == 3
    model(torch.randn(2, 3))  # step 9 is due once unpaused
    assert rec.stats("1").batches == 4
    rec.step()  # step 10 is not due
    model(torch.randn(2, 3))
    assert rec.stats("1").batches == 4
    rec.detach()


def test_module_called_several_times_records_each_call() -> None:
    model = ARCHS["reused_module"][0]()
    with repdiag.attach(model, "relu", metrics=None) as rec:
        model(torch.randn(6, 4))
        rec.step(labels=torch.arange(6))
        x, y = rec.samples("relu")
        assert rec.stats("relu").batches == 2
    assert x.shape == (12, 8)
    torch.testing.assert_close(y, torch.arange(6).repeat(2))


def test_capture_input_of_next_layer() -> None:
    model = ARCHS["resnet_functional"][0]()
    with repdiag.attach(model, "fc", capture="input", metrics=None) as rec:
        model(torch.randn(3, 3, 8, 8))
        x, _ = rec.samples("fc")
    assert x.shape == (3, 16)


def test_table_schema_snapshot_and_compare() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU())
    with repdiag.attach(model, run="r1", snapshot_every=5) as rec:
        for _ in range(10):
            model(torch.randn(8, 4))
            rec.step(labels=torch.randint(0, 2, (8,)))
        table = rec.table()
    assert list(table.columns[:8]) == ["run", "step", "layer", "module", "depth", "metric", "value", "n"]
    assert sorted(table["step"].unique().tolist()) == [5, 10]
    assert set(table["metric"]) >= {"sparsity", "dead_units", "mean", "std", "nonfinite"}
    assert (table["run"] == "r1").all()
    wide = repdiag.compare([table, table.assign(run="r2")])
    assert list(wide.columns) == ["r1", "r2"]
    torch.testing.assert_close(torch.tensor(wide["r1"].to_numpy()), torch.tensor(wide["r2"].to_numpy()),
                               equal_nan=True)


def test_sparsity_metric_on_hand_worked_input() -> None:
    relu = nn.Sequential(nn.ReLU())
    x = torch.tensor([[1.0, -1.0, 0.0, 2.0], [-3.0, -1.0, 5.0, 1.0]])  # 4 of 8 entries -> 0 after ReLU
    with repdiag.attach(relu, "0", metrics=["sparsity", "dead_units"]) as rec:
        relu(x)
        rec.step()
        t = rec.table().set_index("metric")["value"]
    assert t["sparsity"] == 0.5
    assert t["dead_units"] == 0.25  # unit 1 is zero on both samples


# -- bad input ------------------------------------------------------------------------------------
def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"layers": "relu1"}, LayerNotFoundError, r"layer 'relu1' matches no module.*"),
        ({"layers": ["1", "9"]}, LayerNotFoundError, r"'9' matches no module"),
        ({"layers": nn.Conv2d}, LayerNotFoundError, r"no module of Sequential matches"),
        ({"max_samples": 0}, ConfigError, r"max_samples must be an integer >= 1; got 0"),
        ({"max_samples": 2.5}, ConfigError, r"max_samples must be an integer"),
        ({"every": 0}, ConfigError, r"every must be an integer >= 1; got 0"),
        ({"reduce": "max"}, ConfigError, r"reduce must be one of 'mean', 'positions', 'flatten'; got 'max'"),
        ({"metrics": ["sparsty"]}, ConfigError, r"unknown metric 'sparsty'. Did you mean 'sparsity'"),
        ({"capture": "grad"}, ConfigError, r"capture must be one of"),
        ({"sparsity_eps": -1.0}, ConfigError, r"sparsity_eps must be a finite number >= 0"),
        ({"bogus": 1}, TypeError, r"bogus"),
    ],
)
def test_bad_attach_arguments(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        repdiag.attach(_mlp(), **kwargs)


def test_unknown_layer_suggests_closest() -> None:
    model = ARCHS["resnet_functional"][0]()
    with pytest.raises(LayerNotFoundError, match=r"Closest: 'layer1.0.conv[12]', 'layer1.0.conv[12]'"):
        repdiag.attach(model, "layer1.0.conv")


def test_model_must_be_a_module() -> None:
    with pytest.raises(ConfigError, match="model must be a torch.nn.Module; got function"):
        repdiag.attach(lambda x: x)  # type: ignore[arg-type]


def test_labels_must_match_batch() -> None:
    model = _mlp()
    with repdiag.attach(model) as rec:
        model(torch.randn(5, 4))
        with pytest.raises(ShapeError, match=r"labels hold 4 entries but layer '1' saw a batch of 5"):
            rec.step(labels=torch.zeros(4, dtype=torch.long))
        with pytest.raises(ShapeError, match=r"labels must be a 1-D integer tensor"):
            rec.step(labels=torch.zeros(5, 10))
    with pytest.raises(RepdiagError, match="detached"):
        rec.step()


def test_feature_size_change_is_a_clear_error() -> None:
    model = nn.Sequential(nn.Identity())
    with repdiag.attach(model, "0", metrics=None) as rec:
        model(torch.randn(2, 3))
        with pytest.raises(ShapeError, match="produced 4 units on this call but 3 before"):
            model(torch.randn(2, 4))
        assert not rec.attached  # it detached itself


def test_conv_map_variance_precision_with_offset(conv_path: str) -> None:
    """Per-map float32 sums merged in float64: accurate for mean/std up to ~100 per map."""
    g = torch.Generator().manual_seed(1)
    chunks = [50.0 + torch.randn(16, 3, 6, 6, generator=g) for _ in range(5)]
    s = StreamingStats(3, torch.device("cpu"))
    for c in chunks:
        s.update(c)
    ref = torch.cat(chunks).double().transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(s.mean, ref.mean(1), rtol=1e-7, atol=0)
    torch.testing.assert_close(s.var(), ref.var(1, correction=0), rtol=1e-3, atol=0)


def test_import_repdiag_is_light() -> None:
    import subprocess
    import sys

    code = ("import sys, repdiag; heavy = [m for m in ('torch', 'pandas', 'ot', 'umap', 'sklearn', 'matplotlib') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
