"""Bad input to attach and to the functional kernels (issue 14): each case one RepdiagError of the
template (expected, got, what to do), NaN + RepdiagWarning, or the right number against
scikit-learn / SciPy in float64. The case table is in the closing note (bad_cases.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.testing import assert_close

import repdiag
from repdiag import ConfigError
from repdiag import functional as F
from repdiag._errors import UnknownOptionError


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3), nn.ReLU())


@pytest.mark.parametrize("kwargs, parts", [
    ({"layers": 123}, ["layers must be", "got int 123", "list_layers"]),
    ({"layers": []}, ["layers must be", "non-empty list"]),
    ({"seed": "abc"}, ["seed must be an integer", "got str 'abc'", "seed=0"]),
    ({"seed": 2 ** 70}, ["seed must be an integer in", "Pass a smaller seed"]),
    ({"seed": True}, ["seed must be an integer", "bool"]),
    ({"metrics": 5}, ["metrics must be", "got int 5", "repdiag metrics"]),
    ({"metrics": ["sparsity", 3]}, ["metrics must be", "list"]),
    ({"every": 0}, ["every must be an integer >= 1", "got 0"]),
    ({"every": -3}, ["every must be an integer >= 1"]),
    ({"max_samples": 0}, ["max_samples must be an integer >= 1"]),
    ({"max_samples": 2.5}, ["max_samples must be an integer >= 1", "float"]),
    ({"reduce": "maen"}, ["reduce must be one of", "got 'maen'", "Did you mean 'mean'?"]),
    ({"reduce": 3}, ["reduce must be one of", "got 3"]),
    ({"metric_options": {"silhuette_labels": {"standardize": True}}},
     ["metric_options keys must be", "'silhuette_labels'", "Did you mean 'silhouette_labels'?"]),
    ({"metric_options": {"silhouette_labels": {"standardise": True}}},
     ["metric_options['silhouette_labels']", "(standardize)", "got 'standardise'", "Did you mean 'standardize'?"]),
    ({"metric_options": {"*": {"standardise": True}}}, ["metric_options['*']", "Did you mean 'standardize'?"]),
    ({"metric_options": {"effective_rank": {"k": 3}}}, ["takes no options", "got 'k'"]),
    ({"metric_options": [1]}, ["metric_options must be a dict", "got list"]),
    ({"metric_options": {"kmeans_nmi": 3}}, ["metric_options['kmeans_nmi'] must be a dict", "got int 3"]),
])
def test_attach_refuses_bad_arguments_before_hooking(kwargs: dict, parts: list[str]) -> None:
    m = _model()
    with pytest.raises(ConfigError) as info:
        repdiag.attach(m, **kwargs)
    for part in parts:
        assert part in str(info.value)
    assert all(not mod._forward_hooks for mod in m.modules())  # nothing left hooked


def test_attach_unknown_option_suggests_the_close_one() -> None:
    with pytest.raises(UnknownOptionError, match=r"got 'evry'\. Did you mean 'every'\?"):
        repdiag.attach(_model(), evry=2)
    with pytest.raises(TypeError):  # it is a TypeError too, as Python's own for an unknown keyword
        repdiag.attach(_model(), evry=2)


def test_attach_accepts_valid_metric_options() -> None:
    m = _model()
    with repdiag.attach(m, metric_options={"*": {"standardize": True}, "kmeans_nmi": {"k": 3}},
                        layers=["0", nn.ReLU], seed=np.int64(3)) as rec:
        m(torch.randn(5, 4))
        rec.step(torch.tensor([0, 1, 2, 0, 1]))


# -- precision ----------------------------------------------------------------------------------
def _blobs(n: int = 60, d: int = 5, k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    lab = torch.arange(n) % k
    return torch.randn(n, d, generator=g) + 2.0 * lab[:, None].float(), lab


def _sk(name: str, x: torch.Tensor, lab: torch.Tensor) -> float:
    from sklearn import metrics

    return float(getattr(metrics, name)(x.double().numpy(), lab.numpy()))


@pytest.mark.parametrize("name", ["silhouette_score", "davies_bouldin_score", "calinski_harabasz_score"])
@pytest.mark.parametrize("scale", [1e20, 1e-30, 1e30, 1e-20])
def test_cluster_indices_at_extreme_float32_magnitudes(name: str, scale: float) -> None:
    x, lab = _blobs()
    want = _sk(name, x, lab)  # scale-invariant: the float64 value on the unscaled points
    got = getattr(F, name)(x * scale, lab)
    assert got.dtype == torch.float32
    assert_close(got.double(), torch.tensor(want, dtype=torch.float64), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["silhouette_score", "davies_bouldin_score", "calinski_harabasz_score"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cluster_indices_in_half_precision(name: str, dtype: torch.dtype) -> None:
    x, lab = _blobs()
    xh = x.to(dtype)
    want = _sk(name, xh.double(), lab)  # the reference on the half values themselves
    got = getattr(F, name)(xh, lab)
    assert got.dtype == torch.float32  # computed (and returned) in float32
    assert_close(got.double(), torch.tensor(want, dtype=torch.float64), rtol=1e-4, atol=1e-5)


def _pr_ref(x: np.ndarray) -> float:
    lam = np.linalg.svd(x - x.mean(0), compute_uv=False) ** 2
    return float(lam.sum() ** 2 / (lam ** 2).sum())


@pytest.mark.parametrize("scale", [1e20, 1e10, 1e-30])
def test_spectrum_and_cka_at_extreme_magnitudes(scale: float) -> None:
    x, _ = _blobs()
    assert_close(F.participation_ratio(x * scale).double(), torch.tensor(_pr_ref(x.double().numpy()),
                 dtype=torch.float64), rtol=1e-4, atol=0)
    assert_close(F.effective_rank(x * scale), F.effective_rank(x.double()).float(), rtol=1e-4, atol=0)
    assert_close(F.linear_cka(x * scale, x[:, :2] * scale), F.linear_cka(x.double(), x[:, :2].double()).float(),
                 rtol=1e-4, atol=0)


def test_half_and_extreme_inputs_of_kmeans_and_centroid_accuracy() -> None:
    x, lab = _blobs()
    ref = F.kmeans(x.double(), 3, seed=0)
    big = F.kmeans(x * 2.0 ** 70, 3, seed=0)  # a power of two: the exact same clustering
    assert torch.equal(big.labels, ref.labels)
    assert_close(big.centers.double() / 2.0 ** 70, ref.centers, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(F.kmeans(x * 1e-30, 3).inertia)
    assert F.kmeans(x.half(), 3).centers.dtype == torch.float32
    acc = F.nearest_centroid_accuracy(x.half(), lab, x.half(), lab)  # cdist has no half kernel
    from sklearn.neighbors import NearestCentroid

    want = NearestCentroid().fit(x.half().double().numpy(), lab.numpy()).score(x.half().double().numpy(), lab.numpy())
    assert_close(acc.double(), torch.tensor(want, dtype=torch.float64))
    assert_close(F.nearest_centroid_accuracy(x * 1e20, lab, x * 1e20, lab).double(),
                 torch.tensor(want, dtype=torch.float64), atol=0.05, rtol=0)


def test_transport_bounds_at_1e20() -> None:
    from scipy.stats import wasserstein_distance

    x, _ = _blobs()
    a, b = x * 1e20, (x + 1.0) * 1e20
    assert_close(F.first_moment_bound(a, b).double(), torch.tensor(np.sqrt(5.0) * 1e20, dtype=torch.float64),
                 rtol=1e-5, atol=0)
    assert_close(F.coupling_bound(a, b).double(), torch.tensor(np.sqrt(5.0) * 1e20, dtype=torch.float64),
                 rtol=1e-5, atol=0)
    w = F.wasserstein_1d(a[:, :1], b[:, :1], p=2)
    assert torch.isfinite(w).all()
    assert_close(F.wasserstein_1d(a, b).double(), torch.tensor(
        [wasserstein_distance(a[:, j].double().numpy(), b[:, j].double().numpy()) for j in range(5)]),
        rtol=1e-5, atol=0)


def test_standardize_keeps_tiny_columns() -> None:
    x, _ = _blobs()
    from sklearn.preprocessing import StandardScaler

    want = torch.tensor(StandardScaler().fit_transform(x.double().numpy()))
    assert_close(F.standardize(x * 1e-30).double(), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("q, part", [(float("nan"), "NaN is not a quantile"), ([0.5, float("nan")], "nan"),
                                     (1.5, "[0, 1]"), ("a", "got str 'a'")])
def test_histogram_quantiles_refuses_bad_q(q: object, part: str) -> None:
    with pytest.raises(ConfigError) as info:
        F.histogram_quantiles(torch.tensor([1, 2, 3]), q)  # type: ignore[arg-type]
    assert part in str(info.value)


def test_histogram_quantiles_refuses_negative_counts_and_warns_on_empty() -> None:
    with pytest.raises(ConfigError, match="counts must be finite and >= 0"):
        F.histogram_quantiles(torch.tensor([1, -2, 3]), 0.5)
    with pytest.raises(ConfigError, match="counts must be finite"):
        F.histogram_quantiles(torch.tensor([1.0, float("inf")]), 0.5)
    with pytest.warns(repdiag.RepdiagWarning, match="histogram is empty"):
        assert torch.isnan(F.histogram_quantiles(torch.zeros(3), 0.5))


def test_numpy_constant_input_gives_nan_with_warning() -> None:
    with pytest.warns(repdiag.RepdiagWarning, match="zero variance"):
        assert torch.isnan(F.effective_rank(np.zeros((3, 2))))


def test_nonfinite_coupling_bound_input_is_named() -> None:
    x, _ = _blobs()
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(repdiag.NonFiniteError, match="y_t holds 1 non-finite"):
        F.coupling_bound(bad, x)


def test_half_model_table_and_huge_activations() -> None:
    """rec.table() on a float16 model (cdist has no half kernel) and on activations near 1e20."""
    torch.manual_seed(0)
    x, lab = _blobs(60, 4)
    for dtype, scale in ((torch.float16, 1.0), (torch.float32, 1e20)):
        m = nn.Sequential(nn.Linear(4, 6), nn.ReLU()).to(dtype)
        with torch.no_grad():
            m[0].weight.mul_(scale)
        with repdiag.attach(m, metrics=["silhouette_labels", "davies_bouldin_labels", "calinski_harabasz_labels",
                                        "participation_ratio"]) as rec:
            with torch.no_grad():
                m(x.to(dtype))
            rec.step(lab)
            t = rec.table()
        assert len(t) == 4 and np.isfinite(t["value"].to_numpy(dtype=float)).all(), t


def test_complex_and_meta_inputs_are_refused() -> None:
    from repdiag import ShapeError

    lab = torch.tensor([0, 0, 1, 1])
    with pytest.raises(ShapeError, match=r"x must hold real numbers; got dtype torch.complex64\. Pass x.real"):
        F.silhouette_score(torch.randn(4, 2, dtype=torch.cfloat), lab)
    with pytest.raises(ShapeError, match="labels must hold data"):
        F.silhouette_score(torch.randn(4, 2), lab.to("meta"))
    with pytest.raises(ShapeError, match="x must hold data"):
        F.participation_ratio(torch.randn(4, 2, device="meta"))
