"""A bounded reservoir of activation rows on the activations' own device.

Algorithm R (Vitter 1985), vectorised over a batch with no host synchronisation: the i-th row
ever offered (0-based) goes to slot i while the reservoir is filling, and afterwards to a slot
``j ~ U{0..i}`` when ``j < capacity``. Within one batch several rows may pick the same slot;
the sequential algorithm keeps the last of them, so the row with the largest i wins
(``scatter_reduce(amax)``), and losers are sent to a spare trash slot. The kept rows are a
uniform sample without replacement of every row offered since the last reset.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["Reservoir"]


class Reservoir:
    """Fixed-size uniform sample of rows, allocated once on first use.

    Parameters
    ----------
    capacity : int
        Most rows kept.
    seed : int
        Seed of the reservoir's own generator (reservoirs with the same seed offered rows of the
        same counts make the same choices, so layers keep the same input samples).
    """

    def __init__(self, capacity: int, seed: int = 0) -> None:
        self.capacity = capacity
        self.seed = seed
        self.seen = 0
        self.data: Tensor | None = None  # (capacity + 1, d); the last row is the trash slot
        self.labels: Tensor | None = None  # (capacity + 1,), int64, -1 = unknown
        self._gen: torch.Generator | None = None

    @property
    def filled(self) -> int:
        """Rows currently held."""
        return min(self.seen, self.capacity)

    def _allocate(self, like: Tensor) -> None:
        self.data = torch.zeros((self.capacity + 1, like.shape[1]), dtype=like.dtype, device=like.device)
        self.labels = torch.full((self.capacity + 1,), -1, dtype=torch.int64, device=like.device)
        self._gen = torch.Generator(device=like.device)
        self._gen.manual_seed(self.seed)

    def offer(self, rows: Tensor) -> Tensor:
        """Offer ``rows`` (b, d); return the slot each row went to (``capacity`` = discarded)."""
        b = rows.shape[0]
        if self.data is None:
            self._allocate(rows)
        assert self.data is not None and self.labels is not None and self._gen is not None
        if rows.shape[1] != self.data.shape[1] or rows.dtype != self.data.dtype:
            raise ValueError(
                f"rows of shape {tuple(rows.shape)} and dtype {rows.dtype} do not fit a reservoir of "
                f"{self.data.shape[1]} features and dtype {self.data.dtype}")
        dev = rows.device
        k, s = self.capacity, self.seen
        i = torch.arange(s, s + b, device=dev)
        if s + b <= k:  # still filling: deterministic slots, no randomness consumed
            slots = i
        else:
            u = torch.rand(b, generator=self._gen, device=dev, dtype=torch.float64)
            j = torch.floor(u * (i + 1).to(torch.float64)).long().clamp_(max=k)
            j = torch.where(i < k, i, j)
            j = torch.where(j < k, j, torch.full_like(j, k))
            winner = torch.full((k + 1,), -1, dtype=torch.int64, device=dev)
            winner.scatter_reduce_(0, j, i, reduce="amax")
            slots = torch.where(winner.gather(0, j) == i, j, torch.full_like(j, k))
        self.data.index_copy_(0, slots, rows)
        self.labels.index_fill_(0, slots, -1)
        self.seen = s + b
        return slots

    def set_labels(self, slots: Tensor, labels: Tensor) -> None:
        """Write ``labels`` for the rows that went to ``slots``."""
        assert self.labels is not None
        self.labels.index_copy_(0, slots, labels.to(self.labels.device))

    def rows(self) -> tuple[Tensor, Tensor]:
        """The kept rows ``(n, d)`` and their labels ``(n,)`` (views, in slot order)."""
        if self.data is None or self.labels is None:
            raise RuntimeError("reservoir is empty")
        n = self.filled
        return self.data[:n], self.labels[:n]

    def reset(self) -> None:
        """Forget every row (keeps the allocation and restarts the generator)."""
        self.seen = 0
        if self.labels is not None:
            self.labels.fill_(-1)
        if self._gen is not None:
            self._gen.manual_seed(self.seed)

    def nbytes(self) -> int:
        """Bytes held by the storage tensors."""
        if self.data is None or self.labels is None:
            return 0
        return self.data.numel() * self.data.element_size() + self.labels.numel() * self.labels.element_size()
