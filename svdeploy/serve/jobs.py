"""The durable job store of ``svd-serve``: one folder per job under ``--jobs-dir``.

```
JOBS_DIR/<id>/job.json      the record: status, progress, parameters, timings, error
JOBS_DIR/<id>/input         the uploaded image, byte for byte
JOBS_DIR/<id>/result.<ext>  the video, once the job succeeded
```

Every file is written through a temporary sibling and ``os.replace`` (svdeploy.fsutil), and a
result is published before the record that names it, so a server killed at any instant leaves
each job either as it was or as it became; ``recover`` then settles the jobs that were queued
or running. Pure Python: no Ray, no backend.
"""

from __future__ import annotations

import fcntl
import json
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from svdeploy.errors import InputError, ServeError
from svdeploy.fsutil import atomic_write_bytes, atomic_write_json

RECORD = "job.json"
INPUT = "input"
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")
FINISHED = ("succeeded", "failed", "cancelled")
CONTENT_TYPES = {
    "mp4": "video/mp4",
    "gif": "image/gif",
    "webp": "image/webp",
    "npy": "application/x-npy",
}
# A job interrupted this many times while running (the server died under it) is not tried again:
# it may be what kills the server.
MAX_ATTEMPTS = 2
_ID = re.compile(r"^vid_[0-9a-f]{32}$")

Record = Dict[str, Any]


def new_job_id() -> str:
    return "vid_" + uuid.uuid4().hex


def is_job_id(text: str) -> bool:
    return bool(_ID.match(text))


class JobStore:
    """Job records and files under one directory (created when missing)."""

    def __init__(self, root: Union[str, Path]) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(
                f"jobs directory {str(self.root)!r} cannot be created ({exc})"
            ) from None
        if not self.root.is_dir():
            raise InputError(f"jobs directory {str(self.root)!r} is not a directory")

    # -- paths ---------------------------------------------------------------------------------
    def folder(self, job_id: str) -> Path:
        if not is_job_id(job_id):  # never a path built from an arbitrary client string
            raise KeyError(job_id)
        return self.root / job_id

    def input_path(self, job_id: str) -> Path:
        return self.folder(job_id) / INPUT

    def result_path(self, record: Record) -> Path:
        return self.folder(record["id"]) / f"result.{record['parameters']['format']}"

    # -- records -------------------------------------------------------------------------------
    def create(self, parameters: Dict[str, Any], image: bytes) -> Record:
        """A new queued job; its input is on disk before its record, so every record that
        exists can be run."""
        job_id = new_job_id()
        folder = self.folder(job_id)
        folder.mkdir()
        atomic_write_bytes(folder / INPUT, image)
        record: Record = {
            "id": job_id,
            "status": "queued",
            "progress": 0.0,
            "created_at": time.time(),
            "started_at": None,
            "finished_at": None,
            "attempts": 0,
            "error": None,
            "parameters": dict(parameters),
            "input_bytes": len(image),
            "result": None,
            "run": None,
        }
        self.save(record)
        return record

    def save(self, record: Record) -> None:
        atomic_write_json(self.folder(record["id"]) / RECORD, record)

    def get(self, job_id: str) -> Optional[Record]:
        """The record, or None for an unknown (or malformed) id."""
        try:
            path = self.folder(job_id) / RECORD
        except KeyError:
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def records(self) -> Iterator[Tuple[str, Optional[Record]]]:
        """(id, record) for every job folder; record None when unreadable."""
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or not is_job_id(folder.name):
                continue  # temporary files and anything a person put there
            try:
                yield folder.name, json.loads((folder / RECORD).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                yield folder.name, None

    def write_result(self, record: Record, data: bytes) -> Path:
        return atomic_write_bytes(self.result_path(record), data)

    def delete(self, job_id: str) -> None:
        shutil.rmtree(self.folder(job_id), ignore_errors=True)

    # -- after a restart -------------------------------------------------------------------------
    def recover(self) -> List[Record]:
        """Settle what a stopped server left: returns the jobs to run again (oldest first).

        queued → run. running → run again, unless it was interrupted ``MAX_ATTEMPTS`` times
        (then failed). succeeded without its result file → failed. A folder without a readable
        record (killed between mkdir and the first write) is removed: no client ever saw its id.
        """
        rerun: List[Record] = []
        for job_id, record in self.records():
            if record is None:
                self.delete(job_id)
                continue
            status = record.get("status")
            if status == "running" and record.get("attempts", 0) >= MAX_ATTEMPTS:
                self._fail(
                    record,
                    f"the server stopped while this job was running, "
                    f"{record['attempts']} times; it is not run again",
                )
            elif status in ACTIVE and not self.input_path(job_id).is_file():
                self._fail(record, "the job's input image is missing from the jobs directory")
            elif status in ACTIVE:
                record.update(status="queued", progress=0.0, started_at=None)
                self.save(record)
                rerun.append(record)
            elif status == "succeeded" and not self.result_path(record).is_file():
                self._fail(record, "the result file is missing from the jobs directory")
        return sorted(rerun, key=lambda r: r["created_at"])

    def _fail(self, record: Record, reason: str) -> None:
        record.update(status="failed", error=reason, finished_at=time.time())
        self.save(record)

    def expire(self, keep_seconds: float, now: Optional[float] = None) -> List[str]:
        """Delete finished jobs that finished more than ``keep_seconds`` ago; returns their ids."""
        now = time.time() if now is None else now
        gone = []
        for job_id, record in self.records():
            if (
                record
                and record.get("status") in FINISHED
                and record.get("finished_at")
                and now - record["finished_at"] > keep_seconds
            ):
                self.delete(job_id)
                gone.append(job_id)
        return gone


def lock_jobs_dir(jobs_dir: Path):
    """An exclusive lock on JOBS_DIR/.lock for as long as the server lives: two servers on one
    jobs directory would run each other's jobs. The kernel drops it when the process dies
    (kill -9 included), so a restart is never blocked by a stale lock."""
    handle = open(jobs_dir / ".lock", "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise ServeError(
            f"jobs directory {str(jobs_dir)!r} is in use by another svd-serve; "
            "give each server its own --jobs-dir"
        ) from None
    return handle


__all__ = [
    "JobStore",
    "Record",
    "STATUSES",
    "ACTIVE",
    "FINISHED",
    "CONTENT_TYPES",
    "MAX_ATTEMPTS",
    "new_job_id",
    "is_job_id",
    "lock_jobs_dir",
]
