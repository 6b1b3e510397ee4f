"""Run directories: what ``repdiag.attach(..., log_dir=PATH)`` writes as training goes, and how to
read it back (``docs/runs.md`` describes the layout).

- :func:`load_run` reads a run directory into one tidy table (``attrs["meta"]`` = ``meta.json``);
- :func:`read_meta` returns ``meta.json``; :func:`is_run_dir` tells a run directory from a checkpoint;
- :class:`RunWriter` writes one (the recorder uses it; a script may too).
"""

from ._reader import is_run_dir, load_run, read_meta, read_parts
from ._writer import RUN_FORMAT, History, RunWriter, layer_entries

__all__ = ["load_run", "read_meta", "is_run_dir", "read_parts", "RunWriter", "History", "RUN_FORMAT",
           "layer_entries"]
