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
    """Write ``data`` to a temporary file beside ``path`` and rename it into place, so a reader
    sees the old file or the whole new one, never a part; nothing is left behind on failure."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        apply_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: Union[str, os.PathLike], text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Union[str, os.PathLike], obj: Any) -> Path:
    """:func:`atomic_write_text` of ``obj`` as indented JSON."""
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")
