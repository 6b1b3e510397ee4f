"""Agreement of clusters with labels (NMI, purity), the stratified split and nearest-centroid
accuracy.

The label bookkeeping (distinct classes, codes ``0..k-1``, the split) is done on a host copy of
the labels, which reaches the host with the kernel's other checks in one transfer; the codes and
indices travel back without a sync (``_device.to_device``). The ``*_from_contingency`` and
``nearest_centroid_codes`` forms take codes already on the device and do not sync at all (the
metric plan uses them).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._errors import ConfigError, ShapeError, warn_undefined
from .._validation import check_labels, check_samples
from ._device import fetch, to_device
from ._precision import checked_rescaled

__all__ = [
    "normalized_mutual_info",
    "purity",
    "nearest_centroid_accuracy",
    "stratified_split",
    "contingency",
    "nmi_from_contingency",
    "purity_from_contingency",
    "nearest_centroid_codes",
    "split_host",
]


def contingency(a: Tensor, ka: int, b: Tensor, kb: int) -> Tensor:
    """Contingency table (ka, kb), float64, of codes ``a`` in ``0..ka-1`` and ``b`` in
    ``0..kb-1`` on their device, no sync (``index_add_``: CUDA's ``bincount`` reads the maximum)."""
    flat = torch.zeros(ka * kb, dtype=torch.float64, device=a.device)
    return flat.index_add_(0, a * kb + b.to(a.device), torch.ones(a.shape, dtype=torch.float64,
                                                                   device=a.device)).reshape(ka, kb)


def _host_contingency(a: np.ndarray, b: np.ndarray) -> Tensor:
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    ia, ib = ia.reshape(-1), ib.reshape(-1)
    ka, kb = int(ia.max()) + 1, int(ib.max()) + 1
    return torch.as_tensor(np.bincount(ia * kb + ib, minlength=ka * kb).reshape(ka, kb).astype(np.float64))


def _pair(labels_true: Any, labels_pred: Any) -> tuple[Tensor, Tensor]:
    t = check_labels(labels_true, len(labels_true), "labels_true")
    p = check_labels(labels_pred, t.shape[0], "labels_pred")
    if t.shape[0] == 0:
        raise ShapeError("labels_true must hold at least one label; got none.")
    return t, p


def _host_pair(labels_true: Any, labels_pred: Any) -> tuple[Tensor, np.ndarray, np.ndarray]:
    """The checked labels, then both on the host in one transfer (the kernel's one host sync)."""
    t, p = _pair(labels_true, labels_pred)
    ht, hp = fetch(t, p)
    return t, ht, hp


def nmi_from_contingency(c: Tensor) -> Tensor:
    """NMI (arithmetic normalisation) of a contingency table, 0-d float64 on its device, no sync.
    Rows or columns of zeros (classes that do not occur) change nothing."""
    n = c.sum()
    pij = c / n
    pi, pj = pij.sum(dim=1), pij.sum(dim=0)
    nz = pij > 0
    outer = pi[:, None] * pj[None, :]
    one = torch.ones_like(pij)
    mi = torch.where(nz, pij * (torch.where(nz, pij, one).log() - torch.where(nz, outer, one).log()),
                     torch.zeros_like(pij)).sum().clamp(min=0)

    def entropy(p: Tensor) -> Tensor:
        return -torch.where(p > 0, p * torch.where(p > 0, p, torch.ones_like(p)).log(), torch.zeros_like(p)).sum()

    h = entropy(pi) + entropy(pj)
    single = ((pi > 0).sum() == 1) & ((pj > 0).sum() == 1)  # both labelings one cluster: 1
    zero = torch.zeros_like(mi)
    return torch.where(single, torch.ones_like(mi), torch.where(mi == 0, zero, mi / torch.where(mi == 0, one[0, 0], h / 2)))


def purity_from_contingency(c: Tensor) -> Tensor:
    """Purity of a (clusters, classes) contingency table, 0-d float64, no sync."""
    return c.max(dim=1).values.sum() / c.sum()


def normalized_mutual_info(labels_true: Tensor, labels_pred: Tensor) -> Tensor:
    """Normalised mutual information with arithmetic-mean normalisation.

    ``NMI = I(U; V) / ((H(U) + H(V)) / 2)`` from the contingency table of the two labelings
    (natural logarithms; the base cancels). 1 when both labelings are a single cluster, 0 when the
    mutual information is 0. Returns a 0-d float64 tensor on the labels' device. Equals
    ``sklearn.metrics.normalized_mutual_info_score``. The labels are read on the host (one sync).

    References
    ----------
    Vinh, Epps, Bailey, "Information theoretic measures for clusterings comparison", JMLR 11 (2010).

    Examples
    --------
    >>> normalized_mutual_info(torch.tensor([0, 0, 1, 1]), torch.tensor([1, 1, 0, 0]))
    tensor(1., dtype=torch.float64)
    """
    t, ht, hp = _host_pair(labels_true, labels_pred)
    return torch.full((), float(nmi_from_contingency(_host_contingency(ht, hp))), dtype=torch.float64,
                      device=t.device)


def purity(labels_true: Tensor, labels_pred: Tensor) -> Tensor:
    """Cluster purity: ``(1/n) sum_clusters max_class |cluster & class|``, in ``[0, 1]``.

    Returns a 0-d float64 tensor. Reaches 1 when each cluster holds one class (trivially so with
    one cluster per sample), so read it beside NMI. The labels are read on the host (one sync).

    References
    ----------
    Manning, Raghavan, Schütze, *Introduction to Information Retrieval* (2008), §16.3.

    Examples
    --------
    >>> purity(torch.tensor([0, 0, 1, 1, 1]), torch.tensor([0, 0, 0, 1, 1]))
    tensor(0.8000, dtype=torch.float64)
    """
    t, ht, hp = _host_pair(labels_true, labels_pred)
    return torch.full((), float(purity_from_contingency(_host_contingency(hp, ht))), dtype=torch.float64,
                      device=t.device)


def stratified_split(labels: Tensor, test_fraction: float = 0.25, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Indices ``(train, test)`` holding out ``round(test_fraction * n_c)`` samples of each class c
    (at least one stays in training), chosen with a private generator. The split is drawn on the
    host (one sync to read the labels) and the indices travel back without one."""
    lab = check_labels(labels, len(labels))
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1); got {test_fraction!r}.")
    tr, te = split_host(fetch(lab)[0], test_fraction, seed)
    return to_device(tr, lab.device), to_device(te, lab.device)


def split_host(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`stratified_split` of host labels (checked), as sorted int64 index arrays."""
    gen = torch.Generator().manual_seed(int(seed))
    order = np.argsort(labels, kind="stable")
    classes, starts = np.unique(labels[order], return_index=True)
    bounds = list(starts) + [labels.size]
    train, test = [], []
    for i in range(classes.size):  # in class order, each class's indices ascending, as before
        idx = order[bounds[i]:bounds[i + 1]]
        idx = idx[torch.randperm(idx.size, generator=gen).numpy()]
        m = min(round(idx.size * test_fraction), idx.size - 1)
        test.append(idx[:m])
        train.append(idx[m:])
    return (np.sort(np.concatenate(train)).astype(np.int64) if train else np.zeros(0, np.int64),
            np.sort(np.concatenate(test)).astype(np.int64) if test else np.zeros(0, np.int64))


def nearest_centroid_codes(xtr: Tensor, ctr: Tensor, k: int, xte: Tensor, cte: Tensor) -> Tensor:
    """Nearest-centroid accuracy from class codes: ``ctr`` (train, ``0..k-1``, every class present)
    and ``cte`` (test; a code outside ``0..k-1`` is never right), finite inputs at a safe scale,
    at least one test sample. A 0-d tensor in ``xte``'s dtype, no sync."""
    cnt = torch.zeros(k, dtype=xtr.dtype, device=xtr.device).index_add_(0, ctr, torch.ones_like(ctr, dtype=xtr.dtype))
    cent = torch.zeros((k, xtr.shape[1]), dtype=xtr.dtype, device=xtr.device).index_add_(0, ctr, xtr) / cnt[:, None]
    d = torch.cdist(xte, cent.to(xte.device, xte.dtype), compute_mode="donot_use_mm_for_euclid_dist")
    return (d.argmin(dim=1) == cte.to(xte.device)).to(xte.dtype).mean()


def nearest_centroid_accuracy(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor) -> Tensor:
    """Accuracy of the nearest-class-centroid classifier fitted on ``(x_train, y_train)``.

    Each test sample gets the class whose training centroid is nearest (Euclidean; ties to the
    smaller class label). Returns a 0-d tensor in ``x_test``'s dtype and device; NaN with a
    RepdiagWarning when the training set holds fewer than 2 classes or the test set is empty.
    Equals ``sklearn.neighbors.NearestCentroid().fit(...).score(...)``.

    Examples
    --------
    >>> xtr, ytr = torch.tensor([[0.0], [1.0], [9.0], [10.0]]), torch.tensor([0, 0, 1, 1])
    >>> nearest_centroid_accuracy(xtr, ytr, torch.tensor([[2.0], [6.0]]), torch.tensor([0, 0]))
    tensor(0.5000)
    """
    xtr = check_samples(x_train, "x_train")
    xte = check_samples(x_test, "x_test", min_samples=0)
    if xtr.shape[1] != xte.shape[1]:
        raise ShapeError(f"x_train and x_test must have the same number of features; got {xtr.shape[1]} and "
                         f"{xte.shape[1]}.")
    ytr = check_labels(y_train, xtr.shape[0], "y_train")
    yte = check_labels(y_test, xte.shape[0], "y_test")
    # finiteness, one common scale (the nearest centroid does not change) and the labels: one sync
    (xtr, xte), _, (htr, hte) = checked_rescaled([(xtr, "x_train"), (xte, "x_test")], extra=[ytr, yte])
    classes, ctr = np.unique(htr, return_inverse=True)
    if classes.size < 2 or xte.shape[0] == 0:
        warn_undefined("nearest-centroid accuracy", "the training split holds fewer than 2 classes"
                       if classes.size < 2 else "the test split is empty")
        return torch.full((), float("nan"), dtype=xte.dtype, device=xte.device)
    pos = np.minimum(np.searchsorted(classes, hte), classes.size - 1)
    cte = np.where(classes[pos] == hte, pos, -1)  # a class absent from training is never predicted
    return nearest_centroid_codes(xtr, to_device(ctr.reshape(-1).astype(np.int64), xtr.device), int(classes.size),
                                  xte, to_device(cte.astype(np.int64), xte.device))
