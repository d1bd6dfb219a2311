"""svd-bench's child processes: each case runs in its own process, measured (wall and CPU
time, peak RSS through wait4 and VmHWM), watched by a memory guard, or served (a worker that
loads once and times one call per request, so that peers can take turns)."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from .machine import load_average, thread_env

WORKER_MODULE = "svdeploy.benchmarks.worker"
PROTOCOL = "@@svd-bench@@"  # marks the worker protocol's lines among whatever libraries print


# ---------------------------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------------------------
def tree_rss(process: Any) -> int:
    """Resident bytes of a psutil process and all its descendants (a child that ends while
    being read counts as 0); psutil.Error when ``process`` itself has ended."""
    import psutil

    rss = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            rss += child.memory_info().rss
        except psutil.Error:
            pass
    return int(rss)


@dataclass
class ChildRun:
    returncode: int
    seconds: float
    peak_rss_wait4_bytes: int  # ru_maxrss from wait4: at least the parent's RSS at fork (Linux)
    peak_rss_psutil_bytes: int  # polled every 0.25 s, child + its children
    stderr_tail: str
    result: Optional[Dict[str, Any]] = None
    cpu_seconds: float = 0.0  # user + system time of the child (wait4)
    load_average_1m: Optional[float] = None  # of the machine when the child started

    @property
    def cpu_per_wall(self) -> float:
        """Cores the child kept busy on average: about --threads on an idle machine, less when
        other processes compete for the cores (a hint that the timings are disturbed)."""
        return self.cpu_seconds / self.seconds if self.seconds > 0 else 0.0

    @property
    def peak_rss_bytes(self) -> int:
        """The worker's own high-water mark (VmHWM, reported by the worker itself); the polled
        peak when the worker could not report (killed, crashed)."""
        if self.result and self.result.get("peak_rss_vmhwm_bytes"):
            return int(self.result["peak_rss_vmhwm_bytes"])
        return self.peak_rss_psutil_bytes

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.result is not None

    def error(self) -> str:
        lines = [
            ln
            for ln in self.stderr_tail.splitlines()
            if ln.strip() and "[WARNING]" not in ln and "Warning" not in ln
        ]
        return (lines[-1] if lines else f"exit status {self.returncode}")[:500]


class MemoryGuard:
    """Watches the worker processes (and their children) every 0.25 s: each one's peak RSS,
    and their total against ``limit_bytes``. Above the limit the largest worker is killed and
    reported as such, before the kernel's OOM killer picks a process, possibly someone else's."""

    def __init__(self, limit_bytes: Optional[int], interval_s: float = 0.25) -> None:
        self.limit_bytes = limit_bytes
        self.interval_s = interval_s
        self._watched: Dict[int, "Watch"] = {}
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    def watch(self, process: "subprocess.Popen[Any]") -> "Watch":
        entry = Watch(process)
        with self._lock:
            self._watched[process.pid] = entry
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, daemon=True)
                self._thread.start()
        return entry

    def unwatch(self, entry: "Watch") -> None:
        with self._lock:
            self._watched.pop(entry.process.pid, None)

    def _loop(self) -> None:
        try:
            import psutil
        except ImportError:
            return
        while True:
            with self._lock:
                entries = list(self._watched.values())
            if not entries:
                return
            sizes = []
            for entry in entries:
                try:
                    rss = tree_rss(psutil.Process(entry.process.pid))
                except psutil.Error:
                    continue  # ended
                entry.peak_bytes = max(entry.peak_bytes, rss)
                sizes.append((rss, entry))
            total = sum(rss for rss, _ in sizes)
            if self.limit_bytes and total > self.limit_bytes and sizes:
                rss, largest = max(sizes, key=lambda item: item[0])
                largest.killed_reason = (
                    f"killed by svd-bench at {rss / 2**30:.1f} GiB RSS: the workers together held "
                    f"{total / 2**30:.2f} GiB, above --memory-limit "
                    f"{self.limit_bytes / 2**30:.2f} GiB"
                )
                kill_process(largest.process)
            time.sleep(self.interval_s)


def kill_process(process: "subprocess.Popen[Any]") -> None:
    """SIGKILL without reaping: Popen.kill() polls first, which would reap the process and
    leave nothing for the wait4 that reads its resource usage."""
    try:
        os.kill(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@dataclass
class Watch:
    process: "subprocess.Popen[Any]"
    peak_bytes: int = 0
    killed_reason: Optional[str] = None


def resource_zero() -> Any:
    """A stand-in for wait4's rusage when it is not available (all zero)."""
    return resource.struct_rusage((0,) * 16)


def run_measured(
    command: Sequence[str],
    env: Optional[Dict[str, str]],
    timeout_s: float,
    stderr_path: Path,
    guard: Optional[MemoryGuard] = None,
) -> Tuple[int, float, int, int, bool, float, Optional[str]]:
    """Run ``command`` and measure it: (exit status, seconds, ru_maxrss from wait4, peak RSS from
    polling, timed out, CPU seconds, why svd-bench killed it). Caveat: Linux carries the
    parent's RSS at fork into the child's ru_maxrss, so wait4 reports at least this process's
    own size; svd-bench's workers therefore report their own VmHWM, and polling (every 0.25 s,
    with grandchildren) covers commands that cannot. stderr goes to ``stderr_path``."""
    guard = guard or MemoryGuard(None)
    started = time.perf_counter()
    timed_out = threading.Event()
    with open(stderr_path, "w") as err:
        process = subprocess.Popen(list(command), stdout=subprocess.DEVNULL, stderr=err, env=env)

        def kill() -> None:
            timed_out.set()
            kill_process(process)

        # a blocking wait costs the measured machine nothing; a timer enforces the limit
        watchdog = threading.Timer(timeout_s, kill)
        watchdog.start()
        entry = guard.watch(process)
        try:
            _, status, rusage = os.wait4(process.pid, 0)
        finally:
            watchdog.cancel()
            guard.unwatch(entry)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
    # ru_maxrss is in kilobytes on Linux
    cpu = float(rusage.ru_utime + rusage.ru_stime)
    return (
        process.returncode,
        seconds,
        int(rusage.ru_maxrss) * 1024,
        entry.peak_bytes,
        timed_out.is_set(),
        cpu,
        entry.killed_reason,
    )


def run_worker(
    task: str,
    spec: Dict[str, Any],
    threads: int,
    timeout_s: float,
    log: Callable[[str], None] = lambda _m: None,
    guard: Optional[MemoryGuard] = None,
) -> ChildRun:
    """Run ``python -m svdeploy.benchmarks.worker TASK spec.json result.json`` in a fresh
    process with the thread environment, and measure it (``run_measured``)."""
    with tempfile.TemporaryDirectory(prefix="svd-bench-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        result_path = Path(tmp) / "result.json"
        err_path = Path(tmp) / "stderr.txt"
        spec_path.write_text(json.dumps(spec, default=str))
        command = [sys.executable, "-m", WORKER_MODULE, task, str(spec_path), str(result_path)]
        load = load_average()
        code, seconds, peak, peak_psutil, timed_out, cpu, killed = run_measured(
            command, thread_env(threads), timeout_s, err_path, guard
        )
        stderr = err_path.read_text(errors="replace")[-6000:]
        if timed_out:
            stderr += f"\nkilled after the {timeout_s:.0f} s time limit (--case-timeout)"
        if killed:
            stderr += "\n" + killed
        result = json.loads(result_path.read_text()) if result_path.is_file() else None
        run = ChildRun(
            code,
            seconds,
            peak,
            peak_psutil,
            stderr,
            result,
            cpu_seconds=cpu,
            load_average_1m=load[0] if load else None,
        )
        if not run.ok:
            log(f"  {task} failed: {run.error()}")
        return run


class ServedWorker:
    """A worker that loads once and then times one call per request (``serve-graph`` /
    ``serve-e2e``), so that several peers can take turns on the machine."""

    def __init__(
        self,
        kind: str,
        spec: Dict[str, Any],
        threads: int,
        timeout_s: float,
        guard: MemoryGuard,
        log: Callable[[str], None] = lambda _m: None,
    ) -> None:
        import queue

        self.kind = kind
        self.spec = spec
        self.timeout_s = timeout_s
        self.guard = guard
        self.log = log
        self.error: Optional[str] = None
        self._tmp = tempfile.TemporaryDirectory(prefix="svd-bench-")
        tmp = Path(self._tmp.name)
        self._result_path = tmp / "result.json"
        self._err_path = tmp / "stderr.txt"
        spec_path = tmp / "spec.json"
        spec_path.write_text(json.dumps(spec, default=str))
        self._lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self._started = time.perf_counter()
        self._load = load_average()
        self._err = open(self._err_path, "w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                WORKER_MODULE,
                f"serve-{kind}",
                str(spec_path),
                str(self._result_path),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            env=thread_env(threads),
            text=True,
            bufsize=1,
        )
        self._watch = guard.watch(self.process)
        self._rusage: Any = None
        threading.Thread(target=self._read, daemon=True).start()
        self.ready = self._expect("READY") is not None

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(PROTOCOL):
                self._lines.put(line[len(PROTOCOL) :].strip())
        self._lines.put(None)  # the process closed its output

    def _reap(self) -> None:
        """Wait for the process once, with wait4, keeping its resource usage."""
        if self._rusage is None:
            try:
                _, status, self._rusage = os.wait4(self.process.pid, 0)
            except ChildProcessError:  # reaped elsewhere; no resource usage then
                self._rusage = resource_zero()
                return
            self.process.returncode = os.waitstatus_to_exitcode(status)

    def _remaining(self) -> float:
        return max(self.timeout_s - (time.perf_counter() - self._started), 1.0)

    def _fail(self, why: str) -> None:
        if self.error is None:
            self.error = why
            if self._rusage is None:
                kill_process(self.process)

    def _expect(self, kind: str) -> Optional[Dict[str, Any]]:
        import queue

        try:
            line = self._lines.get(timeout=self._remaining())
        except queue.Empty:
            self._fail(f"no answer within the {self.timeout_s:.0f} s limit (--case-timeout)")
            return None
        if line is None:
            self._reap()
            self._fail(self._watch.killed_reason or self._stderr_error())
            return None
        head, _, payload = line.partition(" ")
        if head != kind:
            self._fail(f"worker answered {head} {payload[:200]} instead of {kind}")
            return None
        return json.loads(payload) if payload else {}

    def _stderr_error(self) -> str:
        self._err.flush()
        text = self._err_path.read_text(errors="replace")[-6000:]
        lines = [
            ln
            for ln in text.splitlines()
            if ln.strip() and "[WARNING]" not in ln and "Warning" not in ln
        ]
        code = self.process.returncode
        return (lines[-1] if lines else f"exit status {code}")[:500]

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the worker so far, all its threads (0 when gone)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return 0.0

    def freeze(self, frozen: bool) -> None:
        """SIGSTOP / SIGCONT the worker: a frozen worker's threads cannot run at all, so its
        libraries' idle spin-waiting cannot take cores from the peer being timed."""
        # no poll(): it would reap the process and leave nothing for _reap's wait4
        if self._rusage is None:
            try:
                os.kill(self.process.pid, signal.SIGSTOP if frozen else signal.SIGCONT)
            except ProcessLookupError:
                return
            if frozen:
                self._wait_stopped()

    def _wait_stopped(self, limit_s: float = 2.0) -> None:
        """Return once every thread of the worker is stopped (state T), at most ``limit_s``.

        SIGSTOP takes effect per thread, asynchronously, and a spinning thread's CPU time is
        only folded into /proc's totals when it leaves the core; reading cpu_seconds() before
        that would charge those last milliseconds to the next peer's timed call (on a 2 ms
        call, a single 10 ms clock tick reads as 5 CPU seconds per second)."""
        tasks = Path(f"/proc/{self.process.pid}/task")
        deadline = time.perf_counter() + limit_s
        while time.perf_counter() < deadline and tasks.is_dir():
            try:
                states = [
                    (t / "stat").read_text().rsplit(")", 1)[1].split()[0] for t in tasks.iterdir()
                ]
            except (OSError, IndexError):
                continue  # a thread exited between listing and reading: look again
            if all(state in "TtZX" for state in states):
                return
            time.sleep(0.0005)

    def request(self, command: str) -> Optional[Dict[str, Any]]:
        """Send CALL or WARMUP; the worker's own timing of it ({wall, cpu, ...}) or None."""
        if self.error is not None:
            return None
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            self._reap()
            self._fail(self._watch.killed_reason or self._stderr_error())
            return None
        return self._expect("DONE")

    def close(self) -> ChildRun:
        """QUIT, wait, and measure the process (wait4's peak RSS and CPU time)."""
        if self.error is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.write("QUIT\n")
                self.process.stdin.flush()
                self._expect("BYE")
            except (BrokenPipeError, OSError):
                pass
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
        except OSError:
            pass
        self._reap()
        rusage = self._rusage
        self.guard.unwatch(self._watch)
        self._err.close()
        seconds = time.perf_counter() - self._started
        result = (
            json.loads(self._result_path.read_text())
            if self.error is None and self._result_path.is_file()
            else None
        )
        stderr = self._err_path.read_text(errors="replace")[-6000:]
        if self.error:
            stderr += "\n" + self.error
            self.log(f"  {self.kind} {self.spec.get('peer')} failed: {self.error}")
        run = ChildRun(
            0 if result is not None else (self.process.returncode or 1),
            seconds,
            int(rusage.ru_maxrss) * 1024,
            self._watch.peak_bytes,
            stderr,
            result,
            cpu_seconds=float(rusage.ru_utime + rusage.ru_stime),
            load_average_1m=self._load[0] if self._load else None,
        )
        self._tmp.cleanup()
        return run


__all__ = [
    "WORKER_MODULE",
    "PROTOCOL",
    "ChildRun",
    "MemoryGuard",
    "kill_process",
    "Watch",
    "resource_zero",
    "tree_rss",
    "run_measured",
    "run_worker",
    "ServedWorker",
]
