"""Pure tensor kernels: ``Tensor -> Tensor``, no state, device and dtype kept.

Each kernel is checked against a trusted implementation (scikit-learn, POT, SciPy) in the tests.
"""

__all__: list[str] = []

from ._transport import coupling_bound, emd, first_moment_bound, sliced_wasserstein, wasserstein_1d

__all__ += ["coupling_bound", "emd", "first_moment_bound", "sliced_wasserstein", "wasserstein_1d"]

from ._clustering import (
    calinski_harabasz_score,
    cluster_distance_sums,
    davies_bouldin_score,
    silhouette_samples,
    silhouette_score,
    standardize,
)
from ._kmeans import (
    KMeansResult,
    kmeans,
    kmeans_plusplus,
    nearest_centroid_accuracy,
    normalized_mutual_info,
    purity,
    stratified_split,
)
from ._similarity import effective_rank, linear_cka, participation_ratio
from ._sparsity import channel_sparsity, dead_units, element_sparsity, histogram_quantiles, sample_sparsity, sparsity

__all__ += [
    "calinski_harabasz_score", "cluster_distance_sums", "davies_bouldin_score", "silhouette_samples",
    "silhouette_score", "standardize", "KMeansResult", "kmeans", "kmeans_plusplus", "nearest_centroid_accuracy",
    "normalized_mutual_info", "purity", "stratified_split", "effective_rank", "linear_cka", "participation_ratio",
    "channel_sparsity", "dead_units", "element_sparsity", "histogram_quantiles", "sample_sparsity", "sparsity",
]
