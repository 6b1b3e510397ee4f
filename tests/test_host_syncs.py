"""Host syncs: the accelerator code paths, run on CPU tensors, give the host paths' numbers, and
``table()`` and each kernel wait for the device only a fixed number of times (tests/_syncs.py
counts what would sync on CUDA). The last test checks the same on a real GPU when there is one."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.testing import assert_close

import repdiag
import repdiag.functional as F
from repdiag import NonFiniteError, RepdiagWarning
from repdiag.functional._device import accelerator_paths, fetch, host_path

from ._syncs import SyncCounter

BY_DESIGN = ("_lloyd",)  # the k-means convergence check, every 8 Lloyd iterations on an accelerator


def test_counter_counts_reads_and_value_dependent_calls() -> None:
    x = torch.arange(6.0)
    with SyncCounter() as sc:
        y = x * 2 + 1  # no sync
        y.sum()
        x[torch.tensor([0, 2])]  # integer index: no sync
    assert sc.count() == 0
    with SyncCounter() as sc:
        x[0].item()
        bool(x[1] > 0)
        x[x > 2]
        torch.unique(x)
        x.cpu()
        int(x[3])
    assert [s.op for s in sc.syncs] == ["item", "__bool__", "__getitem__", "unique", "cpu", "__int__"]
    assert all(s.site.startswith("tests/test_host_syncs.py:") and s.function.startswith("test_counter")
               for s in sc.syncs)


def test_counter_does_not_count_reads_of_what_was_copied() -> None:
    x = torch.arange(6.0)
    with SyncCounter() as sc:
        h = x.cpu()
        h.numpy()
        (h + 1).tolist()  # computed from host tensors alone: on the host
        with accelerator_paths():
            fetch(x, x > 2)  # one packed copy
    assert [s.op for s in sc.syncs] == ["cpu", "cpu"]


def test_accelerator_paths_switch_is_scoped() -> None:
    x = torch.zeros(2)
    assert host_path(x)
    with pytest.raises(RuntimeError), accelerator_paths():
        assert not host_path(x)
        raise RuntimeError
    assert host_path(x)


def test_fetch_is_exact() -> None:
    lab = torch.tensor([2**62 + 1, -3, 0])
    v = torch.tensor([1 / 3, float("nan"), -0.0], dtype=torch.float64)
    for ctx in (accelerator_paths, _nothing):
        with ctx():
            a, b, c = fetch(lab, v, torch.tensor(True))
        np.testing.assert_array_equal(a, lab.numpy())
        np.testing.assert_array_equal(b, v.numpy())
        assert c.tolist() == [1]


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: Any) -> None:
        return None


def _data(n: int = 300, d: int = 8, k: int = 4, dup: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, k, (n,), generator=g)
    x = torch.randn(k, d, generator=g)[y] * 2 + torch.randn(n, d, generator=g)
    if dup:
        x[n // 2:] = x[: n - n // 2]  # every row twice: the near-duplicate correction at work
    return x, y


KERNELS: dict[str, Callable[[torch.Tensor, torch.Tensor], Any]] = {
    "silhouette_score": lambda x, y: F.silhouette_score(x, y),
    "silhouette_samples": lambda x, y: F.silhouette_samples(x, y, block=64),
    "davies_bouldin_score": lambda x, y: F.davies_bouldin_score(x, y),
    "calinski_harabasz_score": lambda x, y: F.calinski_harabasz_score(x, y),
    "kmeans": lambda x, y: F.kmeans(x, 4, n_init=3, seed=1),
    "normalized_mutual_info": lambda x, y: F.normalized_mutual_info(y, y.roll(7)),
    "purity": lambda x, y: F.purity(y, y.roll(7)),
    "nearest_centroid_accuracy": lambda x, y: F.nearest_centroid_accuracy(x[::2], y[::2], x[1::2], y[1::2]),
    "standardize": lambda x, y: F.standardize(x),
    "stratified_split": lambda x, y: F.stratified_split(y, 0.3, seed=2),
    "wasserstein_1d": lambda x, y: F.wasserstein_1d(x, x[:170] + 1),
    "sliced_wasserstein": lambda x, y: F.sliced_wasserstein(x, x[:170] * 2, n_projections=16),
    "emd": lambda x, y: F.emd(x[:60], x[100:140] + 1),
    "cluster_distance_sums": lambda x, y: F.cluster_distance_sums(x, torch.nn.functional.one_hot(y, 4), block=64),
}
# Host syncs each kernel makes on an accelerator, beside the k-means convergence checks. One is the
# fetch of its checks (finiteness, scale) with the labels and flags it must decide on; silhouette
# adds the near-duplicate budget of its distance blocks, Calinski-Harabasz the W = 0 warning, the
# transport kernels their result check (functional/_ot_inputs.py).
SYNCS = {"silhouette_score": 2, "silhouette_samples": 2, "davies_bouldin_score": 1, "calinski_harabasz_score": 2,
         "kmeans": 1, "normalized_mutual_info": 1, "purity": 1, "nearest_centroid_accuracy": 1, "standardize": 1,
         "stratified_split": 1, "wasserstein_1d": 2, "sliced_wasserstein": 2, "emd": 1, "cluster_distance_sums": 1}


@pytest.mark.parametrize("dup", [False, True])
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_accelerator_paths_give_the_host_paths_numbers(name: str, dup: bool) -> None:
    x, y = _data(dup=dup)
    want = KERNELS[name](x, y)
    with accelerator_paths():
        got = KERNELS[name](x, y)
    assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_accelerator_silhouette_matches_scikit_learn_on_duplicates() -> None:
    from sklearn.metrics import silhouette_score

    x, y = _data(dup=True)
    with accelerator_paths():
        got = F.silhouette_score(x, y, block=64)
    assert_close(got.double(), torch.tensor(silhouette_score(x.double().numpy(), y.numpy()), dtype=torch.float64),
                 rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_each_kernel_syncs_a_fixed_number_of_times(name: str) -> None:
    for n in (120, 300):  # the count does not depend on the size
        x, y = _data(n=n)
        with accelerator_paths(), SyncCounter() as sc:
            KERNELS[name](x, y[:n])
        assert sc.count(exclude_functions=BY_DESIGN) == SYNCS[name], sc.report()


def test_kernel_errors_and_warnings_unchanged_on_accelerator_paths() -> None:
    x, y = _data()
    bad = x.clone()
    bad[3, 1] = float("nan")
    with accelerator_paths():
        with pytest.raises(NonFiniteError, match=r"x holds 1 non-finite value\(s\) \(NaN or Inf\) out of 2400"):
            F.silhouette_score(bad, y)
        with pytest.warns(RepdiagWarning, match="all points are identical"):
            assert torch.isnan(F.davies_bouldin_score(torch.ones(10, 3), torch.arange(10) % 2))
        with pytest.warns(RepdiagWarning, match="within-cluster dispersion is zero"):
            assert torch.isnan(F.calinski_harabasz_score(torch.tensor([[0.0], [0.0], [1.0], [1.0]]),
                                                         torch.tensor([0, 0, 1, 1])))


def _recorder(layers: int, n: int = 400, unlabelled: bool = False, device: str = "cpu", **kw: Any) -> repdiag.Recorder:
    torch.manual_seed(0)
    mods: list[nn.Module] = []
    d = 16
    for _ in range(layers):
        mods += [nn.Linear(d, 32), nn.ReLU()]
        d = 32
    model = nn.Sequential(*mods).to(device)
    rec = repdiag.attach(model, layers=[str(2 * i + 1) for i in range(layers)], max_samples=n, **kw)
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(5, 16, generator=g) * 2
    with torch.no_grad():
        for b in range(4):
            y = torch.randint(0, 5, (n // 4,), generator=g)
            model((centres[y] + torch.randn(n // 4, 16, generator=g)).to(device))
            rec.step(labels=None if unlabelled and b == 3 else y.to(device))
    return rec


def _table(rec: repdiag.Recorder) -> dict[tuple[str, str], float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t: Any = rec.table()
    return {(r.layer, r.metric): float(r.value) for r in t.itertuples()}


@pytest.mark.parametrize("unlabelled", [False, True])
def test_table_on_accelerator_paths_equals_host_paths(unlabelled: bool) -> None:
    want = _table(_recorder(3, unlabelled=unlabelled))
    with accelerator_paths():
        got = _table(_recorder(3, unlabelled=unlabelled))
    assert want.keys() == got.keys()
    for key, v in want.items():
        assert_close(torch.tensor(got[key]), torch.tensor(v), rtol=1e-5, atol=1e-7, equal_nan=True, msg=str(key))


@pytest.mark.parametrize("unlabelled", [False, True])
def test_table_syncs_do_not_grow_with_layers(unlabelled: bool) -> None:
    counts = []
    for layers in (2, 10):
        rec = _recorder(layers, unlabelled=unlabelled)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with accelerator_paths(), SyncCounter() as sc:
                rec.table()
        counts.append(sc.count(exclude_functions=BY_DESIGN))
        # the layers' checks and labels, the distance sums' budgets, the row values (and the
        # labelled rows' checks when some rows have no label): each one transfer per table
        assert counts[-1] == (4 if unlabelled else 3), sc.report(exclude_functions=BY_DESIGN)
    assert counts[0] == counts[1]


def test_table_warnings_unchanged_on_accelerator_paths() -> None:
    rec = _recorder(2)
    for lay in rec._layers.values():  # every class a single repeated point: W = 0
        x, y = lay.reservoir.rows()
        x.copy_(torch.nn.functional.one_hot(y, x.shape[1]).to(x.dtype))
    with accelerator_paths(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec.table()
    msgs = [str(w.message) for w in caught if issubclass(w.category, RepdiagWarning)]
    assert "calinski_harabasz_labels of layer '1': Calinski-Harabasz index is undefined (NaN): the within-cluster " \
           "dispersion is zero" in msgs


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA's sync-debug mode needs a CUDA device")
def test_cuda_table_syncs_do_not_grow_with_layers() -> None:
    """On a GPU, torch's own sync-debug mode counts the same: no more syncs at 6 layers than at 2
    (k-means left out: its convergence checks depend on the data)."""
    metrics = [m for m in repdiag.metrics.default_metrics() if not m.startswith("kmeans")]
    counts = []
    for layers in (2, 6):
        rec = _recorder(layers, device="cuda", metrics=metrics)
        rec.table()  # warm-up: allocations, lazy initialisation
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                rec.table()
            finally:
                torch.cuda.set_sync_debug_mode(0)
        counts.append(sum("synchroniz" in str(w.message) for w in caught))
    assert counts[0] == counts[1] and counts[0] <= 8, counts


def test_gamma_rows_sync_once_however_many_norm_layers() -> None:
    """The gamma/beta table of a model's norm layers: one transfer for all values (it was one sync
    per value: 19 per BatchNorm layer), and the same numbers."""
    from repdiag.bn import gamma_table

    counts = []
    for layers in (2, 8):
        torch.manual_seed(0)
        model = nn.Sequential(*[m for _ in range(layers) for m in (nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU())])
        for p in model.parameters():
            p.data.uniform_(-1, 1)
        with accelerator_paths(), SyncCounter() as sc:
            t = gamma_table(model, reference=model)
        counts.append(sc.count())
        bn = model[1]
        row = t[(t.layer == "1") & (t.metric == "gamma_std")]
        assert_close(torch.tensor(row.value.item(), dtype=torch.float64), bn.weight.detach().double().std(correction=0))
        qs = t[(t.layer == "1") & (t.metric == "beta_quantile")].sort_values("quantile")
        assert_close(torch.tensor(qs.value.to_numpy()), torch.quantile(bn.bias.detach().double(),
                                                                       torch.tensor(qs["quantile"].to_numpy())))
    assert counts[0] == counts[1] == 1, counts
