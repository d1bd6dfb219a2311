"""File-system helpers shared by every writer."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Union


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def apply_umask(path: Union[str, os.PathLike]) -> None:
    """Give ``path`` (and, for a folder, everything in it) the permissions a plain open() or
    mkdir() would have given: temporary names from mkstemp / mkdtemp are private (0600 / 0700),
    which would make a published artifact unreadable to other users of a shared server."""
    path = Path(path)
    mask = _umask()
    if path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            apply_umask(child)
        os.chmod(path, 0o777 & ~mask)
    elif path.is_file():
        # an executable (ascend/convert.sh) stays executable for whoever may read it
        executable = os.stat(path).st_mode & 0o100
        os.chmod(path, (0o777 if executable else 0o666) & ~mask)


def atomic_write_bytes(path: Union[str, os.PathLike], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary sibling and ``os.replace``: a reader (or a
    process started after a crash) sees the old content or the new one, never a part. The data
    is flushed to disk before the rename, so the rename never publishes an empty file."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        apply_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Union[str, os.PathLike], text: str) -> Path:
    """``atomic_write_bytes`` of ``text`` encoded as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Union[str, os.PathLike], obj: Any) -> Path:
    """``obj`` as indented JSON (UTF-8, trailing newline), written atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
