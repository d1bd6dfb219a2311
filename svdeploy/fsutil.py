"""File-system helpers shared by every writer: the one place for atomic writes, folder swaps,
temporary names, stale-temporary cleanup and turning OS errors into one-line messages.

Every temporary name is hidden and carries the writing process's id, ``.NAME.TAG-PID-XXXX``,
so a later run can tell the leftovers of a killed run (its process is gone) from the work of
a run still going, and remove only the former.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, List, Mapping, Optional, Tuple, Union

from .errors import OutputError

PathLike = Union[str, os.PathLike]
# tags of the temporaries our writers create; a stale-temporary scan matches only these
TEMP_TAGS = ("partial", "tmp", "old")
_TEMP_RE = re.compile(
    r"^\.(?P<name>.+)\.(?P<tag>partial|tmp|old)-(?P<pid>\d+)-[A-Za-z0-9_]+"
    r"(?:\.[A-Za-z0-9]+)?$"
)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def apply_umask(path: PathLike) -> None:
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


# ---------------------------------------------------------------------------------------------
# Interrupts: nothing is published after SIGINT / SIGTERM, even when a library ate the exception
# ---------------------------------------------------------------------------------------------
class InterruptLatch:
    """A SIGINT / SIGTERM handler (the CLIs install it) that raises KeyboardInterrupt and
    remembers that it did. Native code that calls back into Python, MindSpore's graph compiler
    among it, can catch that KeyboardInterrupt and carry on; every publishing step here calls
    raise_if_interrupted() first, so an interrupted run still publishes nothing."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None

    def __call__(self, signum: int, _frame: Any) -> None:
        self.signum = signum
        raise KeyboardInterrupt(f"signal {signum}")


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt when an installed InterruptLatch has fired (a no-op where none is
    installed: library callers keep Python's own SIGINT handling)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if isinstance(handler, InterruptLatch) and handler.signum is not None:
            raise KeyboardInterrupt(f"signal {handler.signum}")


# ---------------------------------------------------------------------------------------------
# OS errors as one-line messages
# ---------------------------------------------------------------------------------------------
def describe_os_error(exc: OSError) -> str:
    """'No space left on device (ENOSPC)' and the like."""
    code = errno.errorcode.get(exc.errno or 0, "")
    text = exc.strerror or str(exc) or type(exc).__name__
    return f"{text} ({code})" if code else text


def output_error(path: PathLike, exc: OSError, outcome: str) -> OutputError:
    """An OutputError naming what could not be written, why, and what was left."""
    return OutputError(f"cannot write {str(path)!r}: {describe_os_error(exc)}; {outcome}")


# ---------------------------------------------------------------------------------------------
# Temporary names
# ---------------------------------------------------------------------------------------------
def temp_prefix(target: Path, tag: str) -> str:
    return f".{target.name}.{tag}-{os.getpid()}-"


def make_temp_dir(target: Path, tag: str = "partial") -> Path:
    """A new hidden folder beside ``target`` (same file system, so a rename publishes it)."""
    return Path(tempfile.mkdtemp(prefix=temp_prefix(target, tag), dir=target.parent))


def make_temp_file(target: Path, suffix: str = "") -> Path:
    fd, name = tempfile.mkstemp(prefix=temp_prefix(target, "tmp"), suffix=suffix, dir=target.parent)
    os.close(fd)
    return Path(name)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def stale_temporaries(target: Path) -> Iterator[Path]:
    """Our temporaries beside ``target`` whose writing process no longer exists."""
    folder = target.parent if str(target.parent) else Path(".")
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        match = _TEMP_RE.match(entry.name)
        if (
            match
            and match["name"] == target.name
            and int(match["pid"]) != os.getpid()
            and not _process_alive(int(match["pid"]))
        ):
            yield entry


@contextlib.contextmanager
def staged_dir(
    out: Path,
    error: Callable[[str], Exception],
    noun: str,
    verb: str,
    shown: str,
    log: Optional[Callable[[str], None]] = None,
) -> Iterator[Path]:
    """A hidden folder beside ``out`` to build the output in (earlier runs' temporaries
    removed first); the body publishes it (``replace_dir`` or its own swap). On any failure
    the folder is removed, and an OSError becomes one ``error``: "``verb`` ``shown`` failed:
    ...; nothing was written", saying whether the earlier ``noun`` is unchanged."""
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out, log)
    try:
        tmp = make_temp_dir(out, "partial")
    except OSError as exc:
        raise error(f"cannot create the {noun} beside {shown}: {describe_os_error(exc)}") from None
    try:
        yield tmp
    except OSError as exc:
        remove_quietly(tmp)
        raise error(
            f"{verb} {shown} failed: {describe_os_error(exc)}"
            f"{f' ({exc.filename})' if exc.filename else ''}; nothing was written"
            f"{f' and the earlier {noun} is unchanged' if out.exists() else ''}"
        ) from None
    except BaseException:
        remove_quietly(tmp)
        raise


def remove_stale_temporaries(
    target: PathLike, log: Optional[Callable[[str], None]] = None
) -> List[Path]:
    """Remove the temporaries an interrupted (killed) earlier run left beside ``target``,
    saying so through ``log``; returns what was removed. Temporaries of live processes stay."""
    removed = []
    for entry in stale_temporaries(Path(target)):
        _remove(entry)
        removed.append(entry)
        if log is not None:
            log(f"removed {str(entry)!r}, left by an interrupted earlier run")
    return removed


def check_writable_folder(folder: PathLike, what: str = "output") -> None:
    """Create and remove a temporary file in ``folder``: refuses a read-only or full file
    system (and, as root, what chmod cannot express) before any long work starts."""
    folder = Path(folder) if str(folder) else Path(".")
    try:
        fd, name = tempfile.mkstemp(prefix=temp_prefix(folder / "probe", "tmp"), dir=folder)
        try:
            os.write(fd, b"\0")
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as exc:
        raise OutputError(
            f"cannot write the {what} in {str(folder)!r}: {describe_os_error(exc)}"
        ) from None


# ---------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------
def write_to_temp(
    path: PathLike, write: Callable[[Path], object], suffix: str = "", parents: bool = False
) -> Path:
    """Run ``write(tmp)`` on a hidden sibling of ``path`` and return it, unpublished (readable
    as a plain file would be). On any failure the temporary is removed; an OSError becomes an
    OutputError naming ``path``. ``parents``: create the folder first when missing."""
    path = Path(path)
    try:
        if parents:
            path.parent.mkdir(parents=True, exist_ok=True)
        tmp = make_temp_file(path, suffix)
    except OSError as exc:
        raise output_error(path, exc, "nothing was written") from None
    try:
        write(tmp)
        apply_umask(tmp)
    except OSError as exc:
        _remove(tmp)
        raise output_error(path, exc, "nothing was written") from None
    except BaseException:
        _remove(tmp)
        raise
    return tmp


def publish(tmp: Path, path: PathLike) -> None:
    """Rename a finished temporary file onto ``path`` (one atomic step)."""
    try:
        raise_if_interrupted()
        os.replace(tmp, path)
    except KeyboardInterrupt:
        _remove(tmp)
        raise
    except OSError as exc:
        _remove(tmp)
        raise output_error(path, exc, "an earlier file there is unchanged") from None


def atomic_write_with(
    path: PathLike, write: Callable[[Path], None], suffix: str = "", parents: bool = False
) -> Path:
    """Write ``path`` through ``write(tmp)`` and a rename: readers see the old file or the
    complete new one, never a part. ``suffix`` ends the temporary name (for writers that pick
    the format from it: matplotlib, numpy.savez); ``parents`` creates the folder."""
    path = Path(path)
    publish(write_to_temp(path, write, suffix, parents), path)
    return path


def _write_durably(tmp: Path, data: bytes) -> None:
    # flushed to disk before the rename: after a crash or power loss the rename never
    # publishes an empty file (records such as svd-serve's job files must survive kill -9)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_bytes(path: PathLike, data: bytes, parents: bool = False) -> Path:
    return atomic_write_with(path, lambda tmp: _write_durably(tmp, data), parents=parents)


def atomic_write_text(
    path: PathLike, text: str, encoding: str = "utf-8", parents: bool = False
) -> Path:
    return atomic_write_bytes(path, text.encode(encoding), parents)


def json_text(
    data: Any,
    indent: int = 2,
    default: Optional[Callable[[Any], Any]] = None,
    allow_nan: bool = False,
) -> str:
    # allow_nan=False by default: NaN / Infinity are not JSON and other readers refuse them
    return json.dumps(data, indent=indent, default=default, allow_nan=allow_nan) + "\n"


def atomic_write_json(
    path: PathLike,
    data: Any,
    indent: int = 2,
    default: Optional[Callable[[Any], Any]] = None,
    allow_nan: bool = False,
    parents: bool = False,
) -> Path:
    return atomic_write_text(path, json_text(data, indent, default, allow_nan), parents=parents)


def replace_dir(tmp: PathLike, out: PathLike) -> None:
    """Publish the finished folder ``tmp`` as ``out``. An existing ``out`` is moved aside
    first (a folder cannot be replaced in one step), removed after the swap, and put back if
    the swap fails."""
    tmp, out = Path(tmp), Path(out)
    raise_if_interrupted()  # the caller's staged_dir removes tmp
    old: Optional[Path] = None
    try:
        if out.exists() or out.is_symlink():
            old = out.with_name(temp_prefix(out, "old") + "swap")
            os.replace(out, old)
        os.replace(tmp, out)
    except OSError as exc:
        if old is not None and not out.exists():
            os.replace(old, out)
        raise output_error(out, exc, "an earlier output there is unchanged") from None
    if old is not None:
        _remove(old)


def remove_quietly(path: PathLike) -> None:
    """Remove a temporary file or folder; a missing one is fine."""
    _remove(Path(path))


def publish_all(pairs: List[Tuple[Path, Path]]) -> None:
    """Publish several finished temporaries (files or folders) as one unit: earlier outputs
    are moved aside first; if any rename fails, the new ones are removed and the earlier ones
    put back, so either all appear or none (a video is never left without its sidecar)."""
    moved: List[Tuple[Path, Path]] = []  # (aside, final)
    placed: List[Path] = []
    try:
        raise_if_interrupted()
    except KeyboardInterrupt:
        for tmp, _ in pairs:
            _remove(tmp)
        raise
    try:
        for tmp, final in pairs:
            if final.exists() or final.is_symlink():
                aside = final.with_name(temp_prefix(final, "old") + "swap")
                os.replace(final, aside)
                moved.append((aside, final))
            os.replace(tmp, final)
            placed.append(final)
    except OSError as exc:
        for final in placed:
            _remove(final)
        for aside, final in moved:
            os.replace(aside, final)
        for tmp, _ in pairs:
            _remove(tmp)
        failed = pairs[len(placed)][1]
        raise output_error(
            failed, exc, "nothing was written and earlier outputs are unchanged"
        ) from None
    for aside, _ in moved:
        _remove(aside)


def check_replaceable(out: PathLike, protected: Mapping[str, PathLike]) -> None:
    """Refuse an output folder whose replacement would delete what must survive it: the
    current directory (or a folder holding it: renaming '.' fails with EBUSY, and a shell
    would be left in a deleted folder) and each ``protected`` input (label → path)."""
    out_path = Path(out).resolve()
    cwd = Path.cwd().resolve()
    if cwd == out_path or out_path in cwd.parents:
        raise OutputError(
            f"--out {str(out)!r} is the current directory or holds it; replacing it "
            "would delete the folder you work in: choose a new folder"
        )
    for label, path in protected.items():
        resolved = Path(path).resolve()
        if resolved == out_path or out_path in resolved.parents:
            raise OutputError(
                f"--out {str(out)!r} is or holds {label} {str(path)!r}; replacing "
                f"it would delete {label}: choose another output folder"
            )
