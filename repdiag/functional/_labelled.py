"""Labelled samples grouped by class for the cluster indices: validated once, with the labels,
finiteness, scale and the all-identical flag read on the host in one transfer."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._validation import check_labels, check_samples
from ._device import label_codes
from ._precision import checked_rescaled

__all__ = ["identical_rows", "prepare_groups", "undefined_reason"]


def identical_rows(x: Tensor, rows: Tensor | None = None) -> Tensor:
    """Whether every row of ``x`` (or every row where the bool ``rows`` is True) equals the first
    such row: a 0-d bool tensor, no sync."""
    if rows is None:
        return (x == x[:1]).all()
    first = x[rows.to(torch.int8).argmax()]  # the first selected row
    return ((x == first) | ~rows[:, None]).all()


def prepare_groups(x: Any, labels: Any, name: str = "x") -> tuple[Tensor, Tensor, Tensor, int, str | None]:
    """Validated samples, labels mapped to ``0..k-1``, cluster sizes, k and why the indices are
    undefined (None when defined). The finite check, the scale, the labels and the
    all-identical flag reach the host in one transfer: a kernel's one host sync."""
    x = check_samples(x, "x")
    lab = check_labels(labels, x.shape[0])  # stays where it is: only its host copy is needed
    (x,), _, (host_lab, same) = checked_rescaled([(x, "x")], extra=[lab, identical_rows(x)])
    inverse, counts, k = label_codes(host_lab, x.device)
    return x, inverse, counts, k, undefined_reason(x.shape[0], k, bool(same[0]))


def undefined_reason(n: int, k: int, identical: bool) -> str | None:
    """Why the cluster indices of ``n`` samples in ``k`` classes are undefined, or None."""
    if k < 2:
        return f"the labels hold {k} distinct class(es); at least 2 are needed"
    if k > n - 1:
        return f"{k} distinct labels for {n} samples; at most n - 1 = {n - 1} clusters are allowed"
    if identical:
        return "all points are identical"
    return None
