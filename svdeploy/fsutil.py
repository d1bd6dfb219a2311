"""File-system helpers shared by every writer."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union


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
