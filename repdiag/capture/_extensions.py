"""The optional probes :func:`repdiag.attach` wires from its keyword options: ``probe=`` (EM shift
on a fixed probe batch) and ``loss_fn=`` (scheduled landscape probes), each loaded on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from ._recorder import Recorder

__all__ = ["EXTENSION_KEYS", "attach_extensions"]

EXTENSION_KEYS = ("probe", "probe_every", "loss_fn", "landscape_every", "optimizer", "landscape_options",
                  "probe_options")
"""The :func:`repdiag.attach` options that belong to a probe rather than to the :class:`Recorder`."""


def attach_extensions(rec: Recorder, ext: dict[str, Any]) -> None:
    """Wire the optional probes (EM shift on a fixed probe batch, landscape probes)."""
    if not ext:
        return
    if ext.get("probe") is not None or "probe_every" in ext or "probe_options" in ext:
        try:
            from ._probe import attach_probe
        except ImportError as exc:  # pragma: no cover - present once the transport probes land
            raise ConfigError("probe=... needs repdiag's EM-shift probe, which this build lacks.") from exc
        attach_probe(rec, ext.pop("probe", None), every=ext.pop("probe_every", None),
                     **dict(ext.pop("probe_options", None) or {}))
    if ext.get("loss_fn") is not None or "landscape_every" in ext:
        try:
            from ..landscape._scheduled import attach_landscape
        except ImportError as exc:  # pragma: no cover - present once the landscape probes land
            raise ConfigError("loss_fn=... needs repdiag.landscape, which this build lacks.") from exc
        attach_landscape(rec, ext.pop("loss_fn", None), every=ext.pop("landscape_every", None),
                         optimizer=ext.pop("optimizer", None), **dict(ext.pop("landscape_options", None) or {}))
    if ext:
        raise ConfigError(f"unused option(s) {sorted(ext)}: probe options need probe=..., landscape options loss_fn=...")
