"""The CLI's output directory, written atomically: the report goes into a temporary directory
beside ``--out`` and replaces it only once complete, so an interrupted run (Ctrl-C, an error)
leaves the old report or the new one, never a mix of the two.

Entries of an existing ``--out`` that the new report does not write (a demo's ``runs/``, files of
your own) are moved into the new directory before the swap. The swap itself (a few renames on one
file system) runs with SIGINT and SIGTERM deferred, so a signal there takes effect once it is
done; only a hard kill (SIGKILL, power loss) in those microseconds can leave ``--out`` beside a
hidden ``.NAME.old-*`` copy of the previous one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._errors import ConfigError

__all__ = ["check_out_dir", "atomic_dir", "TMP_MARK"]

TMP_MARK = ".tmp-"
"""Part of the temporary directory's name: ``.{out name}.tmp-XXXX`` beside ``--out``."""


def check_out_dir(out: str | os.PathLike[str], flag: str = "--out") -> Path:
    """``out`` as a Path if it can become the output directory, else one :class:`ConfigError`:
    an existing file, a parent that is a file or not writable, the working directory itself (it
    would be swapped away), a name the file system refuses. Checked before any work is done."""
    path = Path(out)
    try:
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{flag} must name a directory (new or existing); got {str(out)!r}, an existing file. "
                              f"Choose another {flag}, or remove the file.")
        absolute = path.resolve()
        if absolute == Path.cwd().resolve() or absolute in Path.cwd().resolve().parents:
            raise ConfigError(f"{flag} must be a directory of its own (it is replaced as a whole); got {str(out)!r}, "
                              f"the working directory or one above it. Pass e.g. {flag} repdiag-out.")
        parent = absolute.parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise ConfigError(f"{flag} must lie under a directory; got {str(out)!r}, whose ancestor {str(parent)!r} "
                              f"is a file. Choose another {flag}.")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"{flag} must be writable; got {str(out)!r}, but {str(parent)!r} does not allow "
                              f"writing there. Choose a writable {flag}.")
        absolute.parent.mkdir(parents=True, exist_ok=True)  # the directory the temporary one goes in
        os.rmdir(tempfile.mkdtemp(prefix=f".{path.name[:8]}{TMP_MARK}probe-", dir=absolute.parent))
        if len(path.name.encode()) + 16 > os.pathconf(parent, "PC_NAME_MAX"):
            raise ConfigError(f"{flag} must have a name the file system accepts (at most "
                              f"{os.pathconf(parent, 'PC_NAME_MAX') - 16} bytes here, room for a temporary "
                              f"suffix); got one of {len(path.name.encode())} bytes. Choose a shorter {flag}.")
    except OSError as exc:
        raise ConfigError(f"{flag} {str(out)!r} cannot be used as the output directory: "
                          f"{exc.strerror or exc}. Choose another {flag}.") from exc
    return path


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT / SIGTERM received inside the block take effect (as KeyboardInterrupt / the previous
    handler) after it; outside the main thread (no handlers can be set) the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    sigs = [signal.SIGINT] + ([signal.SIGTERM] if hasattr(signal, "SIGTERM") else [])
    old: dict[int, Any] = {s: signal.signal(s, lambda num, frame: pending.append(num)) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for num in pending[:1]:
            handler = old[num]
            if callable(handler):
                handler(num, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(num)


def _swap(tmp: Path, out: Path) -> None:
    """Move ``tmp`` to ``out``, carrying over the entries of an existing ``out`` the new one lacks."""
    if not out.exists():
        os.replace(tmp, out)
        return
    carried = []
    try:
        for entry in out.iterdir():
            if not (tmp / entry.name).exists() and not (entry.name.startswith(".") and TMP_MARK in entry.name):
                os.replace(entry, tmp / entry.name)
                carried.append(entry.name)
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
    except OSError:
        for name in carried:  # put the old directory back as it was
            os.replace(tmp / name, out / name)
        raise
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(old / out.name, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike[str]) -> Iterator[Path]:
    """A fresh temporary directory beside ``out`` to write into; when the block completes it
    replaces ``out`` (see the module docstring); when it raises (KeyboardInterrupt included) it
    is removed and ``out`` is untouched."""
    target = check_out_dir(out)
    parent = target.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}{TMP_MARK}", dir=parent))
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp's 0700 would become --out's mode
    except OSError as exc:
        raise ConfigError(f"cannot create the output directory beside --out {str(out)!r}: "
                          f"{exc.strerror or exc}. Choose a writable --out.") from exc
    try:
        yield tmp
        with _signals_deferred():
            _swap(tmp, parent / target.name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
