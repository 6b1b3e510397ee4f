"""A host-sync counter for tests: which torch calls would wait for a CUDA device, and where.

:class:`SyncCounter` is a ``TorchFunctionMode``: it sees every torch function and Tensor method
called while it is active (not the calls torch makes inside them: a mode is off while it handles a
call, so each sync is counted once, at the outermost call) and records those that make the host
wait for the device when the tensors are on CUDA:

- reading a value: ``item``, ``tolist``, ``bool()``/``int()``/``float()``/``index`` of a tensor,
  ``in``, formatting, ``numpy()`` / ``np.asarray`` (a CUDA tensor must be copied to the host
  first);
- copies to the host: ``cpu()``, ``to("cpu")`` (a CPU destination named as such);
- calls whose output size depends on values: ``nonzero``, ``argwhere``, one-argument ``where``,
  ``masked_select``, ``unique`` (and ``unique_consecutive``), ``bincount`` (CUDA's reads the
  maximum), ``repeat_interleave`` with tensor repeats and no ``output_size``, ``one_hot`` without
  ``num_classes``, indexing or assigning with a boolean mask, ``histc`` with ``min == max``,
  ``quantile`` with tensor ``q``;
- linear algebra that checks its info codes on the host (``linalg.eigh``, ``svd`` and friends);
- ``torch.equal``, ``allclose``, ``is_nonzero``.

On a CPU-only machine every tensor is on the CPU, so the counter counts what *would* sync: run the
code under :func:`repdiag.functional._device.accelerator_paths` so that the kernels take the paths
they take on a GPU. Each record holds the caller's ``file:line`` and function (the first frame
outside torch and this file), so a test can set apart a site that syncs by design (the k-means
convergence check).
"""

from __future__ import annotations

import os
import sys
import weakref
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

_T = torch.Tensor
_READS = {_T.item, _T.tolist, _T.__bool__, _T.__int__, _T.__float__, _T.__index__, _T.__complex__,
          _T.__contains__, _T.__format__, _T.__repr__, _T.numpy, _T.__array__, torch.is_nonzero, _T.is_nonzero,
          torch.equal, _T.equal, torch.allclose, _T.allclose}
_COPIES = {_T.cpu}
_DATA_DEPENDENT = {torch.nonzero, _T.nonzero, torch.argwhere, _T.argwhere, torch.masked_select, _T.masked_select,
                   torch.unique, _T.unique, torch.unique_consecutive, _T.unique_consecutive, torch.bincount,
                   _T.bincount}
_LINALG = {torch.linalg.eigh, torch.linalg.eigvalsh, torch.linalg.svd, torch.linalg.svdvals, torch.svd,
           torch.linalg.cholesky, torch.linalg.inv, torch.linalg.solve, torch.linalg.lstsq, torch.linalg.eig,
           torch.linalg.eigvals}
_TORCH_DIR = os.path.dirname(torch.__file__)


def _is_mask(i: Any) -> bool:
    if isinstance(i, torch.Tensor):
        return i.dtype in (torch.bool, torch.uint8)
    if isinstance(i, (tuple, list)):
        return any(_is_mask(j) for j in i)
    return False


def _names_cpu(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    dev = kwargs.get("device", args[1] if len(args) > 1 and not isinstance(args[1], torch.dtype) else None)
    return isinstance(dev, str) and dev.split(":")[0] == "cpu"


def would_sync(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The kind of host sync ``func(*args, **kwargs)`` makes on CUDA tensors, or None."""
    if func in _READS:
        return "read"
    if func in _COPIES or (func is _T.to and _names_cpu(args, kwargs)):
        return "copy to host"
    if func in _DATA_DEPENDENT:
        return "data-dependent size"
    if func in _LINALG:
        return "linalg info check"
    if func in (_T.__getitem__, _T.__setitem__) and len(args) > 1 and _is_mask(args[1]):
        return "boolean mask"
    if func is torch.where and len(args) + len(kwargs) == 1:
        return "data-dependent size"
    if func in (torch.repeat_interleave, _T.repeat_interleave) and "output_size" not in kwargs:
        reps = args[1] if len(args) > 1 else kwargs.get("repeats")
        if isinstance(reps, torch.Tensor) and reps.numel() > 1:
            return "data-dependent size"
    if func is torch.nn.functional.one_hot and len(args) < 2 and "num_classes" not in kwargs:
        return "data-dependent size"
    if func in (torch.histc, _T.histc):
        lo, hi = kwargs.get("min", args[2] if len(args) > 2 else 0), kwargs.get("max", args[3] if len(args) > 3 else 0)
        if lo == hi:
            return "data-dependent range"
    if func in (torch.quantile, _T.quantile, torch.nanquantile, _T.nanquantile):
        q = args[1] if len(args) > 1 else kwargs.get("q")
        if isinstance(q, torch.Tensor):
            return "read"
    return None


@dataclass(frozen=True)
class Sync:
    kind: str
    op: str
    site: str  # file:line of the caller
    function: str  # the caller's function name


# helpers that make a sync on behalf of their caller: the record names the caller instead
_TRANSPARENT = {("_device.py", "fetch")}


def _caller() -> tuple[str, str]:
    here = os.path.abspath(__file__)
    f = sys._getframe(2)
    while f is not None:
        path = os.path.abspath(f.f_code.co_filename)
        if path != here and not path.startswith(_TORCH_DIR) \
                and (os.path.basename(path), f.f_code.co_name) not in _TRANSPARENT:
            return f"{os.path.relpath(path)}:{f.f_lineno}", f.f_code.co_name
        f = f.f_back  # type: ignore[assignment]
    return "?", "?"


def _from_host_data(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """A tensor made on the host from host data (``torch.as_tensor(numpy_array)``)."""
    return func in (torch.as_tensor, torch.tensor, torch.asarray) and bool(args) \
        and not isinstance(args[0], torch.Tensor) and kwargs.get("device") in (None, "cpu")


def _host_generator(kwargs: dict[str, Any]) -> bool:
    g = kwargs.get("generator")
    return isinstance(g, torch.Generator) and g.device.type == "cpu" and kwargs.get("device") in (None, "cpu")


class SyncCounter(TorchFunctionMode):
    """Records each call that would make the host wait for a CUDA device (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[Sync] = []
        # tensors known to live on the host: the results of a counted copy to the host, of
        # torch.as_tensor of host data and of CPU generators, and what is computed from such tensors alone;
        # reading them is free (the copy was counted)
        self._host: dict[int, weakref.ref[torch.Tensor]] = {}  # by id (tensors compare elementwise)

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        kind = would_sync(func, args, kwargs)
        first = args[0] if args else None
        on_host = isinstance(first, torch.Tensor) and self._is_host(first)
        if kind is not None and not on_host:
            site, fn = _caller()
            self.syncs.append(Sync(kind, getattr(func, "__name__", str(func)), site, fn))
        out = func(*args, **kwargs)
        if kind == "copy to host" and out is first:
            # on a CPU tensor the copy returns the tensor itself; on CUDA it is a new host tensor
            # (the original stays on the device): an alias stands for it
            out = first.view_as(first)
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        host = kind == "copy to host" or _host_generator(kwargs) or _from_host_data(func, args, kwargs) \
            or (bool(tensors) and all(self._is_host(t) for t in tensors))
        if host:  # what is computed from host tensors alone is on the host too
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    self._host[id(t)] = weakref.ref(t)
        return out

    def _is_host(self, t: torch.Tensor) -> bool:
        ref = self._host.get(id(t))
        return ref is not None and ref() is t

    def count(self, *, exclude_functions: tuple[str, ...] = ()) -> int:
        """Syncs recorded, leaving out those made inside the named functions (by-design sites)."""
        return sum(s.function not in exclude_functions for s in self.syncs)

    def by_site(self, *, exclude_functions: tuple[str, ...] = ()) -> Counter[str]:
        return Counter(f"{s.site} ({s.function}: {s.op})" for s in self.syncs if s.function not in exclude_functions)

    def report(self, **kw: Any) -> str:
        return "\n".join(f"{n:4d}  {site}" for site, n in self.by_site(**kw).most_common())
