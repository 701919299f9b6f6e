"""Crash-safe file writes: write to a temporary file beside the target, fsync, rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

#: a write in progress is ``.<target name>.<random>.tmp`` beside its target
TEMP_SUFFIX = ".tmp"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` then atomically replace ``path`` with it.

    A crash at any point leaves either the old file or the new one, never a torn file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        tmp_path.unlink(missing_ok=True)


def remove_leftovers(folder: Path) -> list[Path]:
    """Delete the temporary files that writes killed before their rename left in ``folder``. Only while no
    write there can be under way (a library's folder under its write lock)."""
    left = [p for p in Path(folder).glob(f".*{TEMP_SUFFIX}") if p.is_file()]
    for path in left:
        path.unlink(missing_ok=True)
    return left
