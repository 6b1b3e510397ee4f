"""The built-in data: scikit-learn's bundled 8x8 digits (no download), as tensors."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["load_digits", "digits_split", "batches"]


def load_digits(*, images: bool = True, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """All 1,797 digits: ``x`` of shape ``(1797, 1, 8, 8)`` (or ``(1797, 64)`` with
    ``images=False``) scaled to [0, 1], and int64 labels ``y`` of shape ``(1797,)``."""
    from sklearn.datasets import load_digits as _load

    d = _load()
    x = torch.as_tensor(d.data, dtype=dtype) / 16.0
    y = torch.as_tensor(d.target, dtype=torch.int64)
    if images:
        x = x.reshape(-1, 1, 8, 8)
    return x, y


def digits_split(test_fraction: float = 0.25, seed: int = 0, *, images: bool = True,
                 standardize: bool = True) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A fixed, stratified train/test split ``(x_train, y_train, x_test, y_test)``.

    With ``standardize`` the pixels are centred and scaled by the training set's mean and std.
    """
    x, y = load_digits(images=images)
    g = torch.Generator().manual_seed(seed)
    test_idx, train_idx = [], []
    for c in range(10):
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = round(len(idx) * test_fraction)
        test_idx.append(idx[:k])
        train_idx.append(idx[k:])
    tr = torch.cat(train_idx)[torch.randperm(sum(len(i) for i in train_idx), generator=g)]
    te = torch.cat(test_idx)
    xtr, xte = x[tr], x[te]
    if standardize:
        mu, sd = xtr.mean(), xtr.std()
        xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    return xtr, y[tr], xte, y[te]


def batches(x: Tensor, y: Tensor, batch_size: int, *, generator: torch.Generator | None = None,
            shuffle: bool = True, drop_last: bool = False) -> Iterator[tuple[Tensor, Tensor]]:
    """Mini-batches of ``(x, y)``, shuffled with ``generator`` (the global RNG is not used)."""
    n = x.shape[0]
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        idx = order[i:i + batch_size]
        yield x[idx], y[idx]
