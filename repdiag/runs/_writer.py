"""Writing a run directory while training runs: ``meta.json`` and one Parquet part per batch of
finished rows (see ``docs/runs.md``).

Every file is written to a hidden temporary name and moved into place with :func:`os.replace`,
so a process killed at any moment (SIGKILL included) leaves only complete files.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from .._errors import ConfigError
from .._layers import role_of
from ..tables import CORE_COLUMNS, RUN_COLUMNS

__all__ = ["RUN_FORMAT", "RunWriter", "History", "layer_entries"]

RUN_FORMAT = "repdiag-run/1"
"""The ``format`` field of ``meta.json``."""

PART_GLOB = "part-*.parquet"


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _versions() -> dict[str, str]:
    import numpy
    import torch

    from .._version import __version__

    return {"repdiag": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "numpy": numpy.__version__, "pandas": pd.__version__}


def _jsonable(value: Any) -> Any:
    """Configuration values as JSON: containers kept, anything else by its ``repr``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"{type(value).__name__} of shape {list(value.shape)}, {value.dtype}"
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    return repr(value)


def layer_entries(hooked: Sequence[tuple[str, str, Any]], depths: Mapping[str, int]) -> list[dict[str, Any]]:
    """``meta.json``'s ``layers``: one dict per hooked ``(name, class name, layout)``.

    ``layout`` is the recorder's ``(batch dim, unit dim)`` for activations of 3 or more dims,
    ``None`` for 2-D ones; it is written ``"(N, C)"`` or ``"batch dim b, unit dim u"``."""
    out = []
    for name, module, layout in hooked:
        depth = depths.get(name)
        if layout is None:
            desc = "(N, C)" if depth is not None else None
        else:
            desc = f"batch dim {layout[0]}, unit dim {layout[1]}"
        out.append({"layer": name, "module": module, "role": role_of(module), "layout": desc, "depth": depth})
    return out


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """One Parquet type per column in every part: boolean parameter columns as booleans, numeric
    ones as float64, others as strings; parameter columns with no value are dropped."""
    out = frame.copy()
    for col in list(out.columns[len(CORE_COLUMNS):]):
        if col in RUN_COLUMNS:
            continue
        s = out[col]
        present = s.dropna()
        if present.empty:
            out = out.drop(columns=col)
        elif present.map(lambda v: isinstance(v, bool)).all():
            out[col] = s.astype("boolean")
        elif pd.api.types.is_numeric_dtype(s) or present.map(lambda v: isinstance(v, (int, float))).all():
            out[col] = s.astype("float64")
        else:
            out[col] = s.astype("string")
    return out


class RunWriter:
    """Writes one run directory: ``meta.json`` and ``rows/part-NNNNNN.parquet``.

    Parameters
    ----------
    path : path-like
        The run directory; created if absent. One that already holds parts is refused (two runs
        in one directory could not be told apart).
    meta : mapping
        ``run``, ``group``, ``seed`` and ``config`` of ``meta.json``; ``format``, ``created`` and
        ``versions`` are added here.
    """

    def __init__(self, path: str | os.PathLike[str], meta: Mapping[str, Any]) -> None:
        import pyarrow  # noqa: F401  (fail at attach, not at the first snapshot)

        self.path = Path(path)
        self.rows = self.path / "rows"
        if self.rows.is_dir() and any(self.rows.glob(PART_GLOB)):
            raise ConfigError(f"log_dir must be a new or empty directory; {str(self.path)!r} already holds a run "
                              f"({len(list(self.rows.glob(PART_GLOB)))} row parts). Pass another log_dir, or delete "
                              "this one to start over.")
        self.rows.mkdir(parents=True, exist_ok=True)
        self.meta: dict[str, Any] = {"format": RUN_FORMAT, "run": meta.get("run"), "group": meta.get("group"),
                                     "seed": meta.get("seed"),
                                     "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                     "config": _jsonable(dict(meta.get("config", {}))), "versions": _versions(),
                                     "layers": _jsonable(list(meta.get("layers", [])))}
        self._seq = 0
        self._schema: Any = None  # pyarrow schema of part 0: every column written so far
        self.write_meta()

    def write_meta(self) -> None:
        """Write ``meta.json`` (atomically)."""
        text = json.dumps(self.meta, indent=1)
        _atomic_write(self.path / "meta.json", lambda p: p.write_text(text + "\n", encoding="utf-8"))

    def add_config(self, options: Mapping[str, Any]) -> None:
        """Add ``options`` (say, attach's probe options) to ``meta.json``'s ``config``."""
        if options:
            self.meta["config"].update(_jsonable(dict(options)))
            self.write_meta()

    def set_layers(self, layers: list[dict[str, Any]]) -> None:
        """Update ``meta.json``'s ``layers`` (rewritten only when they changed)."""
        layers = _jsonable(layers)
        if layers != self.meta["layers"]:
            self.meta["layers"] = layers
            self.write_meta()

    def _part(self, seq: int) -> Path:
        return self.rows / f"part-{seq:06d}.parquet"

    def append(self, frame: pd.DataFrame) -> None:
        """Write ``frame`` (a tidy table) as the next part.

        Part 0 carries every column written so far (rewritten, with empty cells, when a later
        part brings a new parameter column), so ``pd.read_parquet(PATH / "rows")``, which takes
        its columns from the first file, sees them all."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(_normalise(frame), preserve_index=False)
        if self._schema is None:
            self._schema = table.schema
        else:
            new = [f for f in table.schema if f.name not in self._schema.names]
            if new:
                first = pq.read_table(self._part(0))
                for f in new:
                    first = first.append_column(f, pa.nulls(first.num_rows, f.type))
                first = first.replace_schema_metadata(table.schema.metadata)
                _atomic_write(self._part(0), lambda p: pq.write_table(first, p))
                self._schema = first.schema
        _atomic_write(self._part(self._seq), lambda p: pq.write_table(table, p))
        self._seq += 1

    def read(self) -> pd.DataFrame:
        """Every part written so far, as one table."""
        from ._reader import read_parts

        return read_parts(self.path)


class History:
    """The rows a recorder has finished (snapshots, probe rows): in memory, or appended to a run
    directory and read back on demand, so that the recorder's memory does not grow with steps.

    Parameters
    ----------
    writer : RunWriter or None
        Where rows go; None keeps them in a list.
    labels : mapping or None
        ``{"group": ..., "seed": ...}`` added to every frame as columns (None adds nothing).
    describe : callable, optional
        Returns ``meta.json``'s current ``layers``; called before each part is written.
    """

    def __init__(self, writer: RunWriter | None = None, labels: Mapping[str, Any] | None = None,
                 describe: Callable[[], list[dict[str, Any]]] | None = None) -> None:
        self.writer = writer
        self.labels = dict(labels) if labels is not None else None
        self.describe = describe
        self._frames: list[pd.DataFrame] = []

    @property
    def writing(self) -> bool:
        """True when rows go to a run directory."""
        return self.writer is not None

    def label(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` with the ``group`` and ``seed`` columns (when labels were given)."""
        if self.labels is None or ("group" in frame and "seed" in frame):
            return frame
        out = frame.copy()
        out["group"] = pd.Series([self.labels.get("group")] * len(out), dtype="string")
        out["seed"] = pd.Series([self.labels.get("seed")] * len(out), dtype="Int64")
        return out

    def append(self, frame: pd.DataFrame) -> None:
        """Keep ``frame``: write it as a part, or hold it in memory."""
        frame = self.label(frame)
        if self.writer is None:
            self._frames.append(frame)
            return
        if self.describe is not None:
            self.writer.set_layers(self.describe())
        self.writer.append(frame)

    def frames(self) -> list[pd.DataFrame]:
        """Every frame kept so far (read back from disk when writing)."""
        if self.writer is None:
            return list(self._frames)
        table = self.writer.read()
        return [table] if len(table) else []

    def __len__(self) -> int:
        """Frames held in memory (0 when writing to a run directory)."""
        return len(self._frames)

