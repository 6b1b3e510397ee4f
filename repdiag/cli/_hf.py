"""``repdiag report DIR`` for a Hugging Face ``save_pretrained`` directory: ``config.json`` beside
``model.safetensors`` (or ``pytorch_model.bin``, or their sharded ``*.index.json``), loaded with
``transformers`` from local files only (never a download). ``transformers`` is the optional extra
``repdiag[hf]``; it is imported only here, only when such a directory is given."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .._errors import CheckpointError, ConfigError

__all__ = ["WEIGHT_FILES", "is_hf_dir", "load_hf"]

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
"""The weight files of a ``save_pretrained`` directory, in the order transformers prefers them."""


def is_hf_dir(path: str | Path) -> bool:
    """Whether ``path`` is a directory holding ``config.json`` (a ``save_pretrained`` output)."""
    p = Path(path)
    try:
        return p.is_dir() and (p / "config.json").is_file()
    except OSError:
        return False


def load_hf(path: str | Path, *, trust: bool = False) -> Any:
    """The model of a ``save_pretrained`` directory: the class named in ``config.json``'s
    ``architectures`` (``BertForSequenceClassification``...), else ``AutoModel``; weights from
    local files only. Weights the checkpoint lacks or that do not fit are an error (measuring
    freshly initialised weights would be silent nonsense). ``trust`` allows the directory's own
    code (``auto_map``, ``trust_remote_code``)."""
    p = Path(path)
    try:
        import transformers
    except ImportError as exc:
        raise ConfigError(f"{p} is a Hugging Face save_pretrained directory; loading it needs the optional package "
                          "transformers, which is not installed: pip install repdiag[hf]") from exc
    try:
        raw = json.loads((p / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{p / 'config.json'} is not a readable JSON config ({exc}); write it again with "
                              "model.save_pretrained(dir).") from exc
    if not isinstance(raw, dict):
        raise CheckpointError(f"{p / 'config.json'} holds a {type(raw).__name__}; expected a JSON object written by "
                              "model.save_pretrained(dir).")
    weights = [f for f in WEIGHT_FILES if (p / f).is_file()]
    if not weights:
        listed = sorted(x.name for x in p.iterdir())[:8]
        raise CheckpointError(f"{p} holds config.json but no weights; expected one of {', '.join(WEIGHT_FILES)}, got "
                              f"{', '.join(listed)}. Save the model with model.save_pretrained(dir).")
    if raw.get("auto_map") and not trust:
        raise CheckpointError(f"{p}/config.json names its own model code (auto_map), which runs when loaded; pass "
                              "--trust-checkpoint if you trust its author.")
    archs = raw.get("architectures") or []
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    cls = getattr(transformers, arch, None) if arch else None
    if cls is None or not hasattr(cls, "from_pretrained"):
        cls = transformers.AutoModel
    verbosity = transformers.logging.get_verbosity()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # one line on error; repdiag's own bars otherwise
    try:
        model, info = cls.from_pretrained(str(p), local_files_only=True, trust_remote_code=trust,
                                          output_loading_info=True)
    except (OSError, ValueError, KeyError, RuntimeError, EnvironmentError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{p} could not be loaded as {getattr(cls, '__name__', cls)} with transformers "
                              f"{transformers.__version__} from local files: {first}") from exc
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.utils.logging.enable_progress_bar()
    missing = list(info.get("missing_keys") or [])
    mismatched = [str(k[0]) if isinstance(k, tuple) else str(k) for k in info.get("mismatched_keys") or []]
    if missing or mismatched:
        what = (f"lacks {len(missing)} weight(s) of {type(model).__name__} ({', '.join(missing[:4])})" if missing else
                f"holds {len(mismatched)} weight(s) of other shapes ({', '.join(mismatched[:4])})")
        raise CheckpointError(f"{p} {what}; they would be measured at random initialisation. Check that config.json "
                              "names the architecture the weights were saved from.")
    return model
