"""Files written whole or not at all."""
from __future__ import annotations

import json
import os
import tempfile
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
    except OSError as exc:
        if exc.filename is None or str(exc.filename) == str(tmp):  # name the file meant, not the temporary one
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
        raise
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


def unwritable_dir(path: str | os.PathLike) -> str | None:
    """Why files cannot be written in directory ``path`` (created later if missing), or None when they can:
    the nearest part of it that exists must be a directory in which a file can be created (tried with a
    temporary file, deleted again: file modes, read-only mounts and /proc or /sys all say no this way)."""
    path = Path(path)
    existing = next((p for p in (path, *path.parents) if p.exists() or p.is_symlink()), Path("."))
    if not existing.is_dir():
        return "it is a file, not a directory" if existing == path else f"{existing} is not a directory"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        return f"cannot create files in {existing} ({exc.strerror or exc})"
    return None
