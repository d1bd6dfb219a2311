"""``svd-serve`` as a child process: started in its own session (so it and the Ray processes it
starts form one process group), waited for until it says ``ready URL``, stopped with SIGTERM,
or killed whole with SIGKILL. Used by ``svd-bench serve`` and the tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

from svdeploy.errors import ServeError

READY = "ready "


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just gave out (ephemeral), closed again for the server to take."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _descendants(pid: int) -> List[int]:
    """Every process below ``pid`` (from /proc, so psutil is not needed)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class ServeProcess:
    """``with ServeProcess(artifact, jobs_dir, ["--replicas", "2"]) as server: server.url``"""

    def __init__(
        self,
        artifact: Path,
        jobs_dir: Path,
        args: Sequence[str] = (),
        log_path: Optional[Path] = None,
        port: Optional[int] = None,
        start_timeout: float = 300.0,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path or Path(jobs_dir).parent / f"svd-serve-{self.port}.log")
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
        command = [
            sys.executable,
            "-m",
            "svdeploy.serve.cli",
            str(artifact),
            "--port",
            str(self.port),
            "--jobs-dir",
            str(jobs_dir),
            *args,
        ]
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        self._wait_ready(start_timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if READY + self.url in self.log_path.read_text(errors="replace"):
                return
            if self.process.poll() is not None:
                self.close()
                raise ServeError(
                    f"svd-serve exited with status {self.process.returncode} before "
                    f"it was ready:\n{self.log_tail()}"
                )
            time.sleep(0.2)
        self.kill()
        raise ServeError(f"svd-serve was not ready after {timeout} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def tree(self) -> List[int]:
        """The server and every process it started (Ray's included)."""
        return [self.process.pid] + _descendants(self.process.pid)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM (svd-serve removes the application and stops its Ray), then kill whatever
        is left after ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        """SIGKILL to the whole tree at once, as a crash or an OOM kill of the machine would."""
        pids = self.tree() if self.process.poll() is None else []
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:  # Ray daemons that were re-parented to init stay in the process group
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait(30)
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.close()

    def close(self) -> None:
        if not self._log.closed:
            self._log.close()

    def __enter__(self) -> "ServeProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["ServeProcess", "free_port"]
