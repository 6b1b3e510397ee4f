"""The ``repdiag`` command. ``main(argv) -> int``; nothing heavy is imported before a command runs."""

from ._main import main

__all__ = ["main"]
