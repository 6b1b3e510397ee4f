"""Fitting a state dict into a model: a wrapper's key prefix removed or added where that makes
the keys fit, and a mismatch reported as the keys and shapes that differ (for
:mod:`repdiag.checkpoint`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._errors import CheckpointError

__all__ = ["STRIP_PREFIXES", "load_state_into"]

STRIP_PREFIXES: tuple[str, ...] = ("model.", "module.", "_orig_mod.", "net.", "network.")
"""Key prefixes wrappers add (Lightning, DataParallel, torch.compile, ...), removed when that
makes the keys fit the model better."""


def _best_prefix(keys: list[str], want: set[str]) -> tuple[str, str]:
    """(prefix to strip from ``keys``, prefix to add) that maximises overlap with ``want``."""
    best = ("", "")
    best_hits = len(set(keys) & want)
    candidates = set(STRIP_PREFIXES) | {k.split(".", 1)[0] + "." for k in keys if "." in k}
    for p in candidates:
        hits = sum(1 for k in keys if k.startswith(p) and k[len(p):] in want)
        if hits > best_hits:
            best, best_hits = (p, ""), hits
    for p in {w.split(".", 1)[0] + "." for w in want if "." in w}:
        hits = sum(1 for k in keys if p + k in want)
        if hits > best_hits:
            best, best_hits = ("", p), hits
    return best


def _prefix_hint(missing: list[str], unexpected: list[str]) -> str:
    for m in missing[:20]:
        for u in unexpected:
            if u.endswith("." + m) or m.endswith("." + u):
                long, short = (u, m) if len(u) > len(m) else (m, u)
                return f" Only a prefix differs ({long!r} vs {short!r}): the checkpoint was saved from a wrapper."
    return ""


def _listing(keys: list[str], n: int = 6) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def load_state_into(model: Any, state_dict: Mapping[str, Any], *, path: str | Path = "checkpoint",
                    strict: bool = True) -> Any:
    """Load ``state_dict`` into ``model``, fixing a wrapper prefix; mismatches raise :class:`CheckpointError`."""
    want = set(model.state_dict())
    keys = list(state_dict)
    strip, add = _best_prefix(keys, want)
    sd = {add + (k[len(strip):] if strip and k.startswith(strip) else k): v for k, v in state_dict.items()}
    missing = [k for k in model.state_dict() if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in want]
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_listing(unexpected)}")
        raise CheckpointError(
            f"{path} does not fit the model {type(model).__name__}: {'; '.join(parts)}."
            + _prefix_hint(missing, unexpected)
            + " Check --model and --model-kwargs (the architecture it was saved from)."
        )
    target = model.state_dict()
    bad = [f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}" for k, v in sd.items()
           if k in target and hasattr(v, "shape") and tuple(v.shape) != tuple(target[k].shape)]
    if bad:
        raise CheckpointError(f"{path} has tensors of other shapes than the model (checkpoint vs model): "
                              f"{_listing(bad, 4)}. Check --model-kwargs (widths, number of classes).")
    model.load_state_dict(sd, strict=False)
    return model
