"""``--data SPEC``: where the inputs of a report come from.

``digits`` (the default) is the held-out quarter of scikit-learn's bundled 8x8 digits, shaped
``(N, 1, 8, 8)`` and standardised exactly as :func:`repdiag.data.digits_split` does for training
(so the demo's models see the distribution they were trained on). Also accepted: a ``.npz`` of
named arrays or a ``.pt`` file holding a tensor, an ``(x, y)`` pair or a dict of tensors (read
with ``weights_only=True``); or ``module:function`` / ``file.py:function`` returning a Dataset, a
DataLoader, a dict or ``(x, y)``.

A dict (or ``.npz``) holds the labels under ``y`` or ``labels`` and the inputs under every other
key: ``x`` is passed to the model positionally, any other key (``input_ids``, ``attention_mask``,
``token_type_ids``, ``pixel_values``...) as a keyword argument of that name, so a Hugging Face
model gets ``model(input_ids=..., attention_mask=...)``. Integer inputs other than ``x`` keep
their dtype (token ids feed embeddings); ``x`` of an integer type is cast to float (images
stored as ``uint8``). Floating inputs take the model's dtype at the forward.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._errors import ConfigError, DataError

__all__ = ["Batch", "DataSource", "LABEL_KEYS", "POSITIONAL_KEY", "load_data", "check_seed"]

LABEL_KEYS = ("y", "labels")
"""Keys of a data dict that hold the labels (one integer class per sample)."""
POSITIONAL_KEY = "x"
"""The key of a data dict passed to the model positionally; every other input is a keyword."""
MASK_KEY = "attention_mask"
SEED_MAX = 2**32 - 1
"""Largest ``--seed``: numpy's and UMAP's generators take 32-bit seeds."""


@dataclass
class Batch:
    """One forward's worth: ``model(*args, **kwargs)``, labels ``y`` and the attention mask (or
    None)."""

    args: tuple[Tensor, ...]
    kwargs: dict[str, Tensor]
    y: Tensor
    mask: Tensor | None


@dataclass
class DataSource:
    """Inputs ``x`` (N, ...) and labels ``y`` (N,) int64 (all ``-1`` when the data has none), plus a
    description.

    ``x_name`` is the keyword ``x`` is passed under (None: positionally); ``kwargs`` are further
    per-sample inputs passed as keyword arguments (``attention_mask``...)."""

    x: Tensor
    y: Tensor
    description: str
    x_name: str | None = None
    kwargs: dict[str, Tensor] = field(default_factory=dict)

    def batches(self, batch_size: int, device: str = "cpu") -> Iterator[tuple[Tensor, Tensor]]:
        """Consecutive batches on ``device`` (no shuffling: the sample is already random)."""
        for i in range(0, self.x.shape[0], batch_size):
            yield self.x[i:i + batch_size].to(device), self.y[i:i + batch_size].to(device)

    def forward_batches(self, batch_size: int, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None) -> Iterator[Batch]:
        """Consecutive :class:`Batch` es on ``device``; floating inputs cast to ``dtype``."""
        def put(t: Tensor) -> Tensor:
            t = t.to(device)
            return t.to(dtype) if dtype is not None and t.is_floating_point() else t

        for i in range(0, self.x.shape[0], batch_size):
            sl = slice(i, i + batch_size)
            kw = {k: put(v[sl]) for k, v in self.kwargs.items()}
            xb = put(self.x[sl])
            args: tuple[Tensor, ...] = ()
            if self.x_name is None:
                args = (xb,)
            else:
                kw = {self.x_name: xb, **kw}
            yield Batch(args, kw, self.y[sl].to(device), kw.get(MASK_KEY))

    @property
    def has_labels(self) -> bool:
        """Whether any label is known."""
        return bool((self.y >= 0).any())

    @property
    def mask(self) -> Tensor | None:
        """The attention mask (N, T), when the data has one."""
        return self.kwargs.get(MASK_KEY)

    def shapes(self) -> str:
        """The inputs' names, shapes and dtypes, e.g. ``input_ids (64, 12) int64``."""
        parts = [(self.x_name or "x", self.x)] + list(self.kwargs.items())
        return ", ".join(f"{k} {tuple(v.shape)} {str(v.dtype).replace('torch.', '')}" for k, v in parts)


def _exists(path: Path, spec: str) -> bool:
    """Whether ``path`` is a file, with an unusable path (too long, bad characters) a DataError."""
    try:
        return path.is_file()
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise DataError(f"--data {_short(spec)!r} is not a usable path ({reason}); pass the path of an "
                        "existing .npz or .pt file.") from exc


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else f"{text[:n - 20]}...{text[-17:]} ({len(text)} characters)"


def _numeric(value: Any, key: str, where: str) -> Tensor:
    """``value`` (array or tensor) as a tensor, refusing strings, objects, complex and dates."""
    import numpy as np

    if isinstance(value, Tensor):
        if value.is_complex():
            raise DataError(f"{where}: {key!r} is a complex tensor; expected real numbers (integers, floats or "
                            "booleans). Pass the real part or the magnitude.")
        return value.detach()
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise DataError(f"{where}: {key!r} holds {value.dtype} values (kind {value.dtype.kind!r}); expected "
                            "numbers (integers, floats or booleans). Encode strings as integer ids (e.g. with "
                            "a tokenizer) before saving.")
        if value.dtype == np.uint64:
            if value.size and int(value.max()) > np.iinfo(np.int64).max:
                raise DataError(f"{where}: {key!r} holds uint64 values above 2**63 - 1; expected values that fit "
                                "int64.")
            value = value.astype(np.int64)
        return torch.from_numpy(np.ascontiguousarray(value))
    raise DataError(f"{where}: {key!r} is a {type(value).__name__}; expected an array or a tensor with one row "
                    "per sample.")


def _from_dict(obj: Mapping[Any, Any], where: str) -> tuple[dict[str, Tensor], Tensor | None]:
    """(inputs, labels) from a dict: the label key, and every other key an input."""
    keys = [str(k) for k in obj]
    if not all(isinstance(k, str) for k in obj):
        raise DataError(f"{where} holds a dict with non-string keys {keys}; expected names such as 'x' and 'y' or "
                        "'input_ids', 'attention_mask' and 'labels'.")
    labels = [k for k in LABEL_KEYS if k in obj]
    if len(labels) > 1:
        raise DataError(f"{where} holds both 'y' and 'labels'; expected one of them (the labels). Remove the other.")
    inputs = {k: _numeric(v, k, where) for k, v in obj.items() if k not in LABEL_KEYS}
    if not inputs:
        raise DataError(f"{where} holds {sorted(keys) or 'nothing'}; expected inputs: 'x' (passed positionally) or "
                        "named model inputs such as 'input_ids' and 'attention_mask', beside optional labels "
                        "'y' or 'labels'.")
    y = _numeric(obj[labels[0]], labels[0], where) if labels else None
    return inputs, y


def _as_inputs(obj: Any, where: str) -> tuple[dict[str, Tensor], Tensor | None]:
    """(inputs, labels) from a tensor, a pair, a dict, a Dataset or a DataLoader."""
    import numpy as np

    if isinstance(obj, (Tensor, np.ndarray)):
        return {POSITIONAL_KEY: _numeric(obj, POSITIONAL_KEY, where)}, None
    if isinstance(obj, Mapping):
        return _from_dict(obj, where)
    if isinstance(obj, (tuple, list)) and len(obj) == 2 and all(isinstance(o, (Tensor, np.ndarray)) for o in obj):
        return {POSITIONAL_KEY: _numeric(obj[0], POSITIONAL_KEY, where)}, _numeric(obj[1], "y", where)
    from torch.utils.data import DataLoader, Dataset

    if isinstance(obj, (Dataset, DataLoader)):
        items = obj if isinstance(obj, DataLoader) else DataLoader(obj, batch_size=256)
        xs, ys = [], []
        try:
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
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's dataset failed while we iterated it
            raise DataError(f"{where} failed while its samples were read: {type(exc).__name__}: "
                            f"{_first_line(exc)}. Fix the dataset, or save x and y to a .npz.") from exc
        if not xs:
            raise DataError(f"{where} is empty; it yielded no samples.")
        return {POSITIONAL_KEY: torch.cat(xs)}, (torch.cat(ys) if len(ys) == len(xs) else None)
    raise DataError(
        f"{where} returned a {type(obj).__name__}; expected a Dataset, a DataLoader, a tensor, a dict of arrays or an "
        "(x, y) pair."
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read_npz(path: Path, spec: str) -> dict[str, Any]:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise DataError(f"{_short(spec)} holds a single array, not a .npz archive of named arrays; save "
                                "with numpy.savez(path, x=..., y=...).")
            return {k: z[k] for k in z.files}
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated zips, bad headers, object arrays: all a bad file
        raise DataError(f"{_short(spec)} is not a readable .npz file ({type(exc).__name__}: {_first_line(exc)}); "
                        "expected numpy.savez output of numeric arrays (object arrays are refused). Write it "
                        "again.") from exc


def _from_spec(spec: str) -> tuple[dict[str, Tensor], Tensor | None, str]:
    y: Tensor | None
    if spec == "digits":
        from ..data import digits_split

        _, _, x, y = digits_split()
        return {POSITIONAL_KEY: x}, y, "digits (held-out 25% of scikit-learn's 8x8 digits, standardised)"
    path = Path(spec)
    if spec.endswith(".npz"):
        if not _exists(path, spec):
            raise DataError(f"data file {_short(spec)!r} does not exist; check the path.")
        inputs, y = _from_dict(_read_npz(path, spec), _short(spec))
        return inputs, y, path.name
    if spec.endswith((".pt", ".pth")):
        if not _exists(path, spec):
            raise DataError(f"data file {_short(spec)!r} does not exist; check the path.")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a user error here
            raise DataError(f"{_short(spec)} is not a tensor file readable with weights_only=True: "
                            f"{_first_line(exc)}") from exc
        inputs, y = _as_inputs(obj, _short(spec))
        return inputs, y, path.name
    if ":" in spec:
        from .._spec import resolve_callable

        fn = resolve_callable(spec, "data", "--data mypkg.data:validation_set")
        try:
            obj = fn()
        except Exception as exc:
            raise DataError(f"data function {spec!r} failed: {type(exc).__name__}: {exc}") from exc
        inputs, y = _as_inputs(obj, spec)
        return inputs, y, spec
    try:
        missing = not path.exists() and "." in spec
    except (OSError, ValueError):
        missing = True
    raise DataError(
        f"--data must be 'digits', a .npz or .pt file, or 'module:function'; got {_short(spec)!r}."
        + (" That file does not exist." if missing else "")
    )


def _labels(y: Tensor, n: int) -> Tensor:
    """Labels as int64 (N,): any integer or boolean dtype, integral floats, or one-hot rows."""
    if y.ndim == 2 and y.shape[0] == n and y.shape[1] > 1:
        onehot = bool(((y == 0) | (y == 1)).all()) and bool((y.sum(1) == 1).all())
        if not onehot:
            raise DataError(f"labels must be one integer class per sample, shape ({n},), or one-hot rows; got shape "
                            f"{tuple(y.shape)} whose rows are not one-hot (token-level labels are not supported). "
                            "Pass one label per sample.")
        y = y.argmax(1)
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"labels must be one integer class per sample, shape ({n},); got shape {tuple(y.shape)}. "
                        "Pass one label per sample, in the order of the inputs.")
    if y.is_floating_point():
        if not bool(torch.isfinite(y).all()) or not bool((y == y.round()).all()):
            raise DataError(f"labels must be integer class indices; got {str(y.dtype).replace('torch.', '')} values "
                            "that are not whole numbers. Pass class indices (y.argmax(1) for probabilities).")
        if y.numel() and float(y.abs().max()) > 2**53:
            raise DataError("labels must be class indices; got floats beyond 2**53. Pass class indices.")
    y = y.long()
    if y.numel() and int(y.min()) < 0:
        raise DataError(f"labels must be class indices >= 0; got a minimum of {int(y.min())}. Map the classes to "
                        "0..k-1 and leave unlabelled samples out (or drop the labels key).")
    return y


def check_seed(seed: Any, flag: str = "--seed") -> int:
    """``seed`` as an int in ``[0, 2**32 - 1]``, else :class:`ConfigError`."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"{flag} must be an integer in [0, {SEED_MAX}] (numpy's and UMAP's seeds are 32-bit); "
                          f"got {_short(str(seed))}.")
    return seed


def load_data(spec: str, *, samples: int, seed: int = 0) -> DataSource:
    """Read ``spec``, check the shapes, and keep a random subset of ``samples`` rows (seeded)."""
    check_seed(seed)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"--samples must be an integer >= 1; got {samples}.")
    inputs, y, desc = _from_spec(spec)
    name = POSITIONAL_KEY if POSITIONAL_KEY in inputs else next(iter(inputs))
    x = inputs.pop(name)
    if name == POSITIONAL_KEY and x.ndim < 2:
        raise DataError(f"data x must have a batch axis and at least one feature axis; got shape {tuple(x.shape)}. "
                        "Add the feature axis (x[:, None]).")
    n = x.shape[0] if x.ndim else 0
    for k, v in [(name, x), *inputs.items()]:
        if v.ndim == 0 or v.shape[0] != n:
            raise DataError(f"every input must have one row per sample ({n}, the length of {name!r}); {k!r} has shape "
                            f"{tuple(v.shape)}. Save arrays of the same length.")
    if n == 0:
        raise DataError(f"data {_short(spec)!r} holds no samples.")
    mask = inputs.get(MASK_KEY)
    if mask is not None:
        ref = x if name != POSITIONAL_KEY or x.ndim == 2 else None
        if mask.ndim != 2 or (ref is not None and tuple(ref.shape[:2]) != tuple(mask.shape)):
            want = f"{tuple(ref.shape[:2])} like {name!r}" if ref is not None else "(N, T)"
            raise DataError(f"attention_mask must have shape {want}; got {tuple(mask.shape)}. Pass the tokenizer's "
                            "attention_mask (1 = token, 0 = padding).")
        if mask.is_floating_point() and not bool(((mask == 0) | (mask == 1)).all()):
            raise DataError("attention_mask must hold 0 (padding) and 1 (token); got other values.")
    if name == POSITIONAL_KEY and not x.is_floating_point():
        x = x.float()  # images stored as integers; named inputs (token ids) keep their dtype
    y = torch.full((n,), -1, dtype=torch.int64) if y is None else _labels(y, n)
    if n > samples:
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:samples]
        x, y = x[idx], y[idx]
        inputs = {k: v[idx] for k, v in inputs.items()}
    return DataSource(x.contiguous(), y.contiguous(), desc, None if name == POSITIONAL_KEY else name,
                      {k: v.contiguous() for k, v in inputs.items()})
