"""Secrets in files readable by their owner only."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def create_once(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (mode 0600) unless ``path`` exists already.

    Safe when several processes start at once: the file appears complete or not at all, and
    the first one to get there wins; the others leave it as it is.
    """
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written to a private temporary file (0600 from the start), then linked into place:
    # linking fails if another process got there first, and then its file is kept.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, replacing it, readable by its owner only (mode 0600).

    The file never exists with other permissions, nor half written: it is written to a
    private temporary file (0600 from the start) and renamed into place.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
