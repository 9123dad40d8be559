"""Files written whole or not at all."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, BinaryIO, Callable


def atomic_write(path: Path, write: Callable[[BinaryIO], None], keep_previous: Path | None = None) -> None:
    """Write ``path`` through a temporary file beside it, synced to disk, then renamed over it: a crash, a
    kill or a full disk leaves the old file or the new one, never a piece of either (without the fsync, a
    node that dies soon after the rename can leave an empty file). With ``keep_previous``, the old file is
    renamed there first, so the one before the newest survives too."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def replace_whole(path: Path, write: Callable[[Path], None]) -> Path:
    """For writers that take a path (pandas, matplotlib): ``write`` a temporary file beside ``path``, then
    rename it over ``path``, so an interrupted write leaves the previous file whole, never half a new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_json(path: Path) -> Any:
    """A JSON file's content, or None while it is missing, unreadable or not whole JSON: Sacred and the
    sweeps rewrite some files in place, so a reader polling them can meet half a file."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
