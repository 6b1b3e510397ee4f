"""The report's UMAP work: numba's cache reused by the next process, each (run, layer) embedded
once, parallel fits equal to serial ones, and progress estimates that do not extrapolate a slow
first step (driven by a fake clock; no timing of this machine in these tests but the one the
cache test needs)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import repdiag.report
import repdiag.report._embedding as embedding
from repdiag.checkpoint import save_checkpoint
from repdiag.cli import main
from repdiag.models import he_init, small_cnn

ROOT = Path(__file__).resolve().parents[1]


def _blobs(n: int = 90, d: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(size=(n // 3, d)) + 4.0 * k for k in range(3)])


@pytest.fixture
def numba_settings() -> Iterator[None]:
    """numba re-reads its settings once a test has changed NUMBA_CACHE_DIR (monkeypatch restores it)."""
    yield
    if "numba" in sys.modules:
        sys.modules["numba"].core.config.reload_config()


# --- numba's on-disk cache -------------------------------------------------------------------

def test_cache_dir_falls_back_to_the_temporary_directory_when_home_is_read_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, numba_settings: None) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache's parent should be")
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "cache"))  # mkdir fails: as with a read-only home
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    path = embedding.numba_cache_dir()
    assert path.parent == tmp_path / "tmp" and path.name.startswith("repdiag-numba-") and path.is_dir()
    assert os.environ["NUMBA_CACHE_DIR"] == str(path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # a writable home is preferred
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    assert embedding.numba_cache_dir() == tmp_path / "xdg" / "repdiag" / "numba"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))  # the user's own setting wins
    assert embedding.numba_cache_dir() == tmp_path / "mine"


_PROBE = """
import hashlib, json, sys, time
t0 = time.perf_counter()
import numpy as np
from repdiag.report import embed, load_umap, numba_cache_dir
load_umap()

def counts():  # numba's cache hits and misses (compilations) over umap's and pynndescent's functions
    from numba.core.dispatcher import Dispatcher
    seen, hits, misses = set(), 0, 0
    for name, mod in list(sys.modules.items()):
        if mod is not None and name.split(".")[0] in ("umap", "pynndescent"):
            for obj in list(vars(mod).values()):
                if isinstance(obj, Dispatcher) and id(obj) not in seen:
                    seen.add(id(obj))
                    hits += sum(obj.stats.cache_hits.values())
                    misses += sum(obj.stats.cache_misses.values())
    return hits, misses

loaded = counts()  # two tiny umap.utils functions with explicit signatures compile at import, before load_umap
rng = np.random.default_rng(0)
x = np.concatenate([rng.normal(size=(60, 12)) + 4.0 * k for k in range(3)])
xy = embed(x, "umap", seed=0)
seconds = time.perf_counter() - t0
hits, misses = counts()
print(json.dumps({"seconds": seconds, "hits": hits, "import_misses": loaded[1], "misses": misses - loaded[1],
                  "dir": str(numba_cache_dir()),
                  "digest": hashlib.sha256(xy.tobytes()).hexdigest()}))
"""


def _probe(xdg: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(XDG_CACHE_HOME=str(xdg), PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
def test_the_next_process_loads_umap_from_the_numba_cache(tmp_path: Path) -> None:
    """Two fresh processes with the same (empty at first) cache: the first compiles UMAP and
    pynndescent (~30-45 s on 2 cores) and writes the cache; the second compiles nothing, loads
    every function from it, and is not slower. Fails if the cache is not used: the second would
    compile (misses) and take as long as the first."""
    first = _probe(tmp_path / "xdg")
    cache = tmp_path / "xdg" / "repdiag" / "numba"
    assert first["dir"] == str(cache)
    # compiled here: pynndescent's (eager signatures) while importing, umap's own in the fit
    assert first["import_misses"] > 20 and first["misses"] >= 3, first
    index = sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*.nbi"))
    assert any(p.startswith("umap_") for p in index) and any(p.startswith("pynndescent_") for p in index), index
    assert any("_optimize_layout_euclidean_single_epoch" in p for p in index), index  # umap's own, now cached
    second = _probe(tmp_path / "xdg")
    assert second["misses"] == 0 and second["hits"] >= first["misses"], (first, second)  # the fit's code loaded
    # importing: all but two tiny umap.utils functions, compiled by their explicit signatures at import
    assert second["import_misses"] <= first["import_misses"] / 10, (first, second)
    assert second["digest"] == first["digest"]  # the cached code computes the same embedding, bit for bit
    assert second["seconds"] <= 1.2 * first["seconds"] + 1.0, (first["seconds"], second["seconds"])


def test_enable_numba_cache_switches_uncached_umap_functions_once() -> None:
    embedding.load_umap()
    from numba.core.caching import NullCache

    from umap import layouts, umap_

    for fn in (umap_.smooth_knn_dist, umap_.compute_membership_strengths,
               layouts._nb_optimize_layout_euclidean_single_epoch):
        assert not isinstance(getattr(fn, "_cache"), NullCache), fn  # declared without cache=True by umap-learn 0.5
    assert embedding.enable_numba_cache() == 0  # idempotent: nothing left to switch


# --- each (run, layer) embedded once ---------------------------------------------------------

@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[int, ...], bytes]]:
    """Every call of the embedding (as PCA, instant), one worker, and the UMAP warm-up counted as
    ('warm-up', (), b'')."""
    calls: list[tuple[str, tuple[int, ...], bytes]] = []
    real = embedding.embed

    def fake(x: Any, method: str = "umap", **kw: Any) -> np.ndarray:
        arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
        calls.append((method, arr.shape, arr.tobytes()))
        return real(arr, "pca")

    monkeypatch.setattr(embedding, "embed", fake)
    monkeypatch.setattr(repdiag.report, "embed_workers", lambda n, cores=None: 1)
    monkeypatch.setattr(repdiag.report, "warm_up_umap", lambda: calls.append(("warm-up", (), b"")))
    return calls


def test_report_embeds_each_run_and_layer_once(tmp_path: Path, counted: list[tuple[str, tuple[int, ...], bytes]]
                                               ) -> None:
    paths = []
    for k, norm in enumerate(("bn", "none")):
        model = he_init(small_cnn(norm), torch.Generator().manual_seed(k)).eval()
        paths.append(str(save_checkpoint(model, tmp_path / f"{norm}.pt", factory="repdiag.models:small_cnn", norm=norm)))
    out = tmp_path / "out"
    assert main(["report", *paths, "--out", str(out), "--quiet", "--samples", "120", "--metrics", "sparsity"]) == 0
    fits = [c for c in counted if c[0] == "umap"]
    assert len(fits) == 6 and len({c[2] for c in fits}) == 6, [c[:2] for c in counted]  # 2 runs x 3 layers
    assert [c[0] for c in counted] == ["warm-up"] + ["umap"] * 6  # nothing else embeds (figures reuse them)
    assert (out / "plots" / "embedding_umap.png").is_file()


def test_demo_embeds_each_group_and_layer_once_and_its_bar_never_goes_back(
        tmp_path: Path, counted: list[tuple[str, tuple[int, ...], bytes]], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--seeds", "1", "--epochs", "1", "--out", str(tmp_path / "d")]) == 0
    assert [c[0] for c in counted] == ["warm-up"] + ["umap"] * 6  # bn-s0 and nobn-s0 x 3 layers
    assert len({c[2] for c in counted[1:]}) == 6
    lines = [ln for ln in capsys.readouterr().err.replace("\r", "\n").splitlines() if "%|" in ln]
    percent = [int(m.group(1)) for ln in lines if (m := re.search(r"(\d+)%\|", ln))]
    assert percent[-1] == 100 and lines[-1].startswith("done in")
    drops = [(a, b) for a, b in zip(percent, percent[1:]) if b < a - 1]
    assert not drops, drops  # the figures were reserved at the start: no jump back once they are planned


# --- parallel fits ---------------------------------------------------------------------------

def test_embed_workers_leave_a_core_and_stay_serial_on_two() -> None:
    assert [embedding.embed_workers(6, cores=c) for c in (1, 2, 3, 4, 8, 64)] == [1, 1, 2, 3, 6, 6]
    assert embedding.embed_workers(1, cores=16) == 1 and embedding.embed_workers(0, cores=16) == 1


@pytest.mark.slow
def test_parallel_fits_equal_serial_fits_bitwise() -> None:
    import multiprocessing

    embedding.warm_up_umap()  # the worker loads what this process compiled
    xs = [_blobs(seed=k) for k in range(4)]
    serial = [embedding.embed(x, "umap", seed=3) for x in xs]
    order: list[int] = []
    workers_alive: list[int] = []

    def done(i: int) -> None:
        order.append(i)
        workers_alive.append(len(multiprocessing.active_children()))

    parallel = embedding.embed_many(xs, "umap", seed=3, workers=2, done=done)
    assert sorted(order) == [0, 1, 2, 3]  # each fit once
    assert max(workers_alive) >= 1  # a spawned worker did fit some of them
    for a, b in zip(serial, parallel):
        torch.testing.assert_close(torch.from_numpy(b), torch.from_numpy(a), rtol=0, atol=0)


def test_a_pool_that_cannot_start_leaves_the_fits_to_this_process(monkeypatch: pytest.MonkeyPatch,
                                                                   counted: list[Any]) -> None:
    import concurrent.futures

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError("no processes here")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", refuse)
    xs = [_blobs(seed=k) for k in range(3)]
    order: list[int] = []
    out = embedding.embed_many(xs, "umap", workers=3, done=order.append)
    assert order == [0, 1, 2] and len(counted) == 3
    for x, xy in zip(xs, out):
        torch.testing.assert_close(torch.from_numpy(xy), torch.from_numpy(embedding._pca(x.astype(np.float64))))


# --- honest progress -------------------------------------------------------------------------

class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _eta(text: str) -> float | None:
    """Seconds of the remaining time a tqdm line shows (``elapsed<remaining``); None for '?'."""
    m = re.search(r"<(?:(\d+):)?(\d+):(\d+)", text)
    if not m:
        assert "<?" in text, text
        return None
    h, mi, s = (int(g) if g else 0 for g in m.groups())
    return 3600.0 * h + 60.0 * mi + s


def test_report_fit_estimate_leaves_the_first_use_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """UMAP's first use costs 10x a fit (compiling numba code); six fits of 1 s follow. After the
    first fit the bar must promise about 5 s, not 55 s."""
    import tqdm.std

    from repdiag.cli import _progress
    from repdiag.cli._cmd_report import embed_all

    clock = _Clock()
    monkeypatch.setattr(tqdm.std, "time", clock)
    bars: list[Any] = []
    real_bar = _progress.progress_bar
    monkeypatch.setattr(_progress, "progress_bar", lambda *a, **k: bars.append(real_bar(*a, **k)) or bars[-1])

    def warm_up() -> None:
        clock.t += 10.0

    seen: list[tuple[int, float | None]] = []

    def fit(x: Any, method: str = "umap", **kw: Any) -> np.ndarray:
        fits = bars[-1]
        if fits.n:
            seen.append((int(fits.n), _eta(str(fits))))
        clock.t += 1.0
        return np.zeros((len(x), 2))

    monkeypatch.setattr(repdiag.report, "warm_up_umap", warm_up)
    monkeypatch.setattr(repdiag.report, "umap_cache_warm", lambda: False)
    monkeypatch.setattr(embedding, "embed", fit)
    monkeypatch.setattr(repdiag.report, "embed_workers", lambda n, cores=None: 1)
    embed_all([np.ones((5, 3))] * 6, "umap", seed=0, quiet=False, desc="umap of 2 runs x 3 layers")
    assert "compile umap" in bars[0].desc  # the first use named as such, without an estimate
    assert [n for n, _ in seen] == [1, 2, 3, 4, 5]
    for n, eta in seen:
        true = 6.0 - n
        assert eta is not None and true / 2 <= eta <= 2 * true, (n, eta, true)
    # the same schedule on one bar that includes the first use, as before, misleads by 11x
    with open(os.devnull, "w") as sink, tqdm.std.tqdm(total=6, file=sink, smoothing=0.0) as naive:
        clock.t += 11.0
        naive.update(1)
        assert (_eta(str(naive)) or 0.0) > 2 * 5.0


def test_progress_estimate_leaves_the_first_step_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """A weighted bar whose first step costs 10x the rest: '?' after it, then within 2x of the
    true remaining time at every later step (tqdm's own estimate is 10x off after the first)."""
    import tqdm.std

    from repdiag.cli._progress import Progress

    clock = _Clock()
    monkeypatch.setattr(tqdm.std, "time", clock)
    bar = Progress(40, quiet=False)
    costs = [10.0] + [1.0] * 39
    for k, cost in enumerate(costs):
        clock.t += cost
        bar.advance(1)
        eta = _eta(bar.text())
        true = sum(costs[k + 1:])
        if k == 0:
            assert eta is None  # the rate is not known yet: no promise
        else:
            assert eta is not None and true / 2 <= eta <= max(2 * true, 1.0), (k, eta, true)
        if k == 19:  # work found later (figures planned) moves the estimate with it
            bar.grow(10)
            costs += [1.0] * 10
    assert bar.n == bar.total == 50  # full, with the work found later
    bar.close()
    with open(os.devnull, "w") as sink, tqdm.std.tqdm(total=40, file=sink) as naive:
        clock.t += 10.0
        naive.update(1)
        assert (_eta(str(naive)) or 0.0) > 2 * 39
