"""``--data SPEC``: where the inputs of a report come from.

``digits`` (the default) is the held-out quarter of scikit-learn's bundled 8x8 digits, shaped
``(N, 1, 8, 8)`` and standardised exactly as :func:`repdiag.data.digits_split` does for training
(so the demo's models see the distribution they were trained on). Also accepted: a ``.npz`` with
arrays ``x`` and (optionally) ``y``; a ``.pt`` file holding a tensor, an ``(x, y)`` pair or a dict
with ``x``/``y`` (read with ``weights_only=True``); or ``module:function`` / ``file.py:function``
returning a Dataset, a DataLoader or ``(x, y)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._errors import ConfigError, DataError

__all__ = ["DataSource", "load_data"]


@dataclass
class DataSource:
    """Inputs ``x`` (N, ...) and labels ``y`` (N,) int64 (``-1`` = unknown), plus a description."""

    x: Tensor
    y: Tensor
    description: str

    def batches(self, batch_size: int, device: str = "cpu") -> Iterator[tuple[Tensor, Tensor]]:
        """Consecutive batches on ``device`` (no shuffling: the sample is already random)."""
        for i in range(0, self.x.shape[0], batch_size):
            yield self.x[i:i + batch_size].to(device), self.y[i:i + batch_size].to(device)

    @property
    def has_labels(self) -> bool:
        """Whether any label is known."""
        return bool((self.y >= 0).any())


def _as_xy(obj: Any, where: str) -> tuple[Tensor, Tensor | None]:
    """(x, y) from a tensor, a pair, a dict with x/y, a Dataset or a DataLoader."""
    import numpy as np

    if isinstance(obj, (Tensor, np.ndarray)):
        return torch.as_tensor(obj), None
    if isinstance(obj, dict):
        if "x" not in obj:
            raise DataError(f"{where} holds a dict with keys {sorted(map(str, obj))}; expected 'x' (and 'y').")
        return torch.as_tensor(obj["x"]), None if obj.get("y") is None else torch.as_tensor(obj["y"])
    if isinstance(obj, (tuple, list)) and len(obj) == 2 and all(isinstance(o, (Tensor, np.ndarray)) for o in obj):
        return torch.as_tensor(obj[0]), torch.as_tensor(obj[1])
    from torch.utils.data import DataLoader, Dataset

    if isinstance(obj, (Dataset, DataLoader)):
        items = obj if isinstance(obj, DataLoader) else DataLoader(obj, batch_size=256)
        xs, ys = [], []
        for i, item in enumerate(items):
            if isinstance(item, (tuple, list)) and len(item) >= 2:
                xs.append(torch.as_tensor(item[0]))
                ys.append(torch.as_tensor(item[1]))
            elif isinstance(item, Tensor):
                xs.append(item)
            else:
                raise DataError(f"{where} yields {type(item).__name__} items; expected (x, y) pairs or tensors.")
            if i > 10_000:
                break
        if not xs:
            raise DataError(f"{where} is empty; it yielded no samples.")
        return torch.cat(xs), (torch.cat(ys) if len(ys) == len(xs) else None)
    raise DataError(
        f"{where} returned a {type(obj).__name__}; expected a Dataset, a DataLoader, a tensor or an (x, y) pair."
    )


def _from_spec(spec: str) -> tuple[Tensor, Tensor | None, str]:
    y: Tensor | None
    if spec == "digits":
        from ..data import digits_split

        _, _, x, y = digits_split()
        return x, y, "digits (held-out 25% of scikit-learn's 8x8 digits, standardised)"
    path = Path(spec)
    if spec.endswith(".npz"):
        import numpy as np

        if not path.is_file():
            raise DataError(f"data file {spec!r} does not exist; check the path.")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise DataError(f"{spec} is not a readable .npz file (object arrays are refused): {exc}") from exc
        if "x" not in arrays:
            raise DataError(f"{spec} must hold an array named 'x' (and 'y' for labels); it holds {sorted(arrays)}.")
        y = torch.as_tensor(arrays["y"]) if "y" in arrays else None
        return torch.as_tensor(arrays["x"]), y, f"{path.name}"
    if spec.endswith((".pt", ".pth")):
        if not path.is_file():
            raise DataError(f"data file {spec!r} does not exist; check the path.")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a user error here
            raise DataError(f"{spec} is not a tensor file readable with weights_only=True: "
                            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
        x, y = _as_xy(obj, spec)
        return x, y, path.name
    if ":" in spec:
        from .._spec import resolve_callable

        fn = resolve_callable(spec, "data", "--data mypkg.data:validation_set")
        try:
            obj = fn()
        except Exception as exc:
            raise DataError(f"data function {spec!r} failed: {type(exc).__name__}: {exc}") from exc
        x, y = _as_xy(obj, spec)
        return x, y, spec
    raise DataError(
        f"--data must be 'digits', a .npz or .pt file, or 'module:function'; got {spec!r}."
        + (" That file does not exist." if not path.exists() and "." in spec else "")
    )


def load_data(spec: str, *, samples: int, seed: int = 0) -> DataSource:
    """Read ``spec``, check the shapes, and keep a random subset of ``samples`` rows (seeded)."""
    x, y, desc = _from_spec(spec)
    if x.ndim < 2:
        raise DataError(f"data x must have a batch axis and at least one feature axis; got shape {tuple(x.shape)}.")
    if x.shape[0] == 0:
        raise DataError(f"data {spec!r} holds no samples.")
    if not x.is_floating_point():
        x = x.float()
    if y is None:
        y = torch.full((x.shape[0],), -1, dtype=torch.int64)
    else:
        y = torch.as_tensor(y)
        if y.ndim == 2 and y.shape[0] == x.shape[0]:
            y = y.argmax(1)  # one-hot
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise DataError(f"labels y must be one integer per sample, shape ({x.shape[0]},); got {tuple(y.shape)}.")
        if y.is_floating_point():
            if not bool((y == y.round()).all()):
                raise DataError("labels y must be integer class indices; got non-integer floats.")
        y = y.long()
    if samples < 1:
        raise ConfigError(f"--samples must be an integer >= 1; got {samples}.")
    if x.shape[0] > samples:
        idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:samples]
        x, y = x[idx], y[idx]
    return DataSource(x.contiguous(), y.contiguous(), desc)
