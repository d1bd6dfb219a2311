"""Shared pieces of the svd-bench suites: timing statistics, child processes with their own
peak RSS, thread settings, machine description, deterministic inputs, atomic writes."""
from __future__ import annotations

import functools
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from svdeploy.contract import relative_error as relative_l2  # the old name, re-exported
from svdeploy.fsutil import atomic_write_json, atomic_write_text, atomic_write_with

WORKER_MODULE = "svdeploy.benchmarks.worker"
PROTOCOL = "@@svd-bench@@"  # marks the worker protocol's lines among whatever libraries print


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------
@dataclass
class Stats:
    """Seconds of repeated runs (after warm-up): median and the 10th / 90th percentiles, and the
    process CPU seconds of the same runs when recorded."""

    samples: List[float]
    cpu_samples: Optional[List[float]] = None

    @property
    def cpu_per_wall(self) -> Optional[float]:
        """Cores kept busy during the timed runs: about the thread count on an idle machine,
        less when other processes took the cores (the wall times are then inflated)."""
        if not self.cpu_samples or not sum(self.samples):
            return None
        return sum(self.cpu_samples) / sum(self.samples)

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return float(np.median(self.samples)) if self.samples else float("nan")

    @property
    def p10(self) -> float:
        return float(np.percentile(self.samples, 10)) if self.samples else float("nan")

    @property
    def p90(self) -> float:
        return float(np.percentile(self.samples, 90)) if self.samples else float("nan")

    @property
    def min(self) -> float:
        return float(min(self.samples)) if self.samples else float("nan")

    def to_json(self) -> Dict[str, Any]:
        out = {"n": self.n, "median_s": self.median, "p10_s": self.p10, "p90_s": self.p90,
               "min_s": self.min, "samples_s": [round(s, 6) for s in self.samples]}
        if self.cpu_samples is not None:
            out["cpu_s"] = [round(s, 6) for s in self.cpu_samples]
            out["cpu_per_wall"] = self.cpu_per_wall
        return out


def time_repeated(fn: Callable[[], Any], repeats: int, warmup: int,
                  budget_s: Optional[float] = None) -> Stats:
    """Run ``fn`` ``warmup`` times untimed, then up to ``repeats`` timed runs. With a budget,
    timed runs stop once it is spent (at least 3 are kept); the sample count is reported, so a
    cut-short measurement is visible."""
    for _ in range(warmup):
        fn()
    samples: List[float] = []
    cpu: List[float] = []
    started = time.perf_counter()
    for i in range(repeats):
        c0 = time.process_time()
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if budget_s is not None and i + 1 >= 3 and time.perf_counter() - started > budget_s:
            break
    return Stats(samples, cpu)


# ---------------------------------------------------------------------------------------------
# Threads (inside a worker process: each library gets the same count)
# ---------------------------------------------------------------------------------------------
def set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def set_mindspore_threads(threads: int) -> Optional[str]:
    """MindSpore's CPU kernel thread count; it can be set once per process."""
    import mindspore as ms

    try:
        ms.device_context.cpu.op_tuning.threads_num(threads)
    except RuntimeError as exc:  # already set in this process
        return str(exc)
    return None


def ort_session_options(threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return options


def thread_env(threads: int) -> Dict[str, str]:
    """Environment of a worker: OpenMP / BLAS pools sized before any library starts them."""
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[key] = str(threads)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("DIFFUSERS_VERBOSITY", "error")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env.setdefault("GLOG_v", "3")  # MindSpore: errors only
    return env


# ---------------------------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------------------------
@dataclass
class ChildRun:
    returncode: int
    seconds: float
    peak_rss_wait4_bytes: int      # ru_maxrss from wait4: at least the parent's RSS at fork (Linux)
    peak_rss_psutil_bytes: int     # polled every 0.25 s, child + its children
    stderr_tail: str
    result: Optional[Dict[str, Any]] = None
    cpu_seconds: float = 0.0       # user + system time of the child (wait4)
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
        lines = [ln for ln in self.stderr_tail.splitlines()
                 if ln.strip() and "[WARNING]" not in ln and "Warning" not in ln]
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
                    proc = psutil.Process(entry.process.pid)
                    rss = proc.memory_info().rss
                    for child in proc.children(recursive=True):
                        try:
                            rss += child.memory_info().rss
                        except psutil.Error:
                            pass
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
                    f"{self.limit_bytes / 2**30:.2f} GiB")
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


def run_measured(command: Sequence[str], env: Optional[Dict[str, str]], timeout_s: float,
                 stderr_path: Path, guard: Optional[MemoryGuard] = None
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
    return (process.returncode, seconds, int(rusage.ru_maxrss) * 1024, entry.peak_bytes,
            timed_out.is_set(), cpu, entry.killed_reason)


def run_worker(task: str, spec: Dict[str, Any], threads: int, timeout_s: float,
               log: Callable[[str], None] = lambda _m: None,
               guard: Optional[MemoryGuard] = None) -> ChildRun:
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
            command, thread_env(threads), timeout_s, err_path, guard)
        stderr = err_path.read_text(errors="replace")[-6000:]
        if timed_out:
            stderr += f"\nkilled after the {timeout_s:.0f} s time limit (--case-timeout)"
        if killed:
            stderr += "\n" + killed
        result = json.loads(result_path.read_text()) if result_path.is_file() else None
        run = ChildRun(code, seconds, peak, peak_psutil, stderr, result, cpu_seconds=cpu,
                       load_average_1m=load[0] if load else None)
        if not run.ok:
            log(f"  {task} failed: {run.error()}")
        return run


class ServedWorker:
    """A worker that loads once and then times one call per request (``serve-graph`` /
    ``serve-e2e``), so that several peers can take turns on the machine."""

    def __init__(self, kind: str, spec: Dict[str, Any], threads: int, timeout_s: float,
                 guard: MemoryGuard, log: Callable[[str], None] = lambda _m: None) -> None:
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
            [sys.executable, "-m", WORKER_MODULE, f"serve-{kind}", str(spec_path),
             str(self._result_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._err, env=thread_env(threads), text=True, bufsize=1)
        self._watch = guard.watch(self.process)
        self._rusage: Any = None
        threading.Thread(target=self._read, daemon=True).start()
        self.ready = self._expect("READY") is not None

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(PROTOCOL):
                self._lines.put(line[len(PROTOCOL):].strip())
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
        lines = [ln for ln in text.splitlines()
                 if ln.strip() and "[WARNING]" not in ln and "Warning" not in ln]
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
                states = [(t / "stat").read_text().rsplit(")", 1)[1].split()[0]
                          for t in tasks.iterdir()]
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
        result = (json.loads(self._result_path.read_text())
                  if self.error is None and self._result_path.is_file() else None)
        stderr = self._err_path.read_text(errors="replace")[-6000:]
        if self.error:
            stderr += "\n" + self.error
            self.log(f"  {self.kind} {self.spec.get('peer')} failed: {self.error}")
        run = ChildRun(0 if result is not None else (self.process.returncode or 1), seconds,
                       int(rusage.ru_maxrss) * 1024, self._watch.peak_bytes, stderr, result,
                       cpu_seconds=float(rusage.ru_utime + rusage.ru_stime),
                       load_average_1m=self._load[0] if self._load else None)
        self._tmp.cleanup()
        return run


# ---------------------------------------------------------------------------------------------
# Machine
# ---------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# Instruction-set flags (Linux /proc/cpuinfo) that give a CPU native bfloat16 arithmetic
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_flags(cpuinfo: Optional[str] = None) -> Optional[List[str]]:
    """The first CPU's flags ("flags" on x86, "Features" on Arm), or None where unreadable."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        key = line.split(":", 1)[0].strip().lower()
        if key in ("flags", "features") and ":" in line:
            return line.split(":", 1)[1].split()
    return None


def cpu_bf16_flags(cpuinfo: Optional[str] = None) -> Optional[List[str]]:
    """The bf16 flags this CPU has ([] when it has none: bf16 is then emulated, hundreds of
    times slower than float32); None when the flags cannot be read."""
    flags = cpu_flags(cpuinfo)
    return None if flags is None else [f for f in flags if f in BF16_CPU_FLAGS]


def _version(module: str) -> Optional[str]:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def _git_state(repo: Path) -> Dict[str, Any]:
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return {"commit": commit or None, "modified_files": len(dirty.splitlines()) if dirty else 0}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "modified_files": None}


def machine_info(threads: int) -> Dict[str, Any]:
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
        memory = psutil.virtual_memory().total
    except ImportError:
        physical, memory = None, None
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu_model": _cpu_model(), "logical_cores": os.cpu_count(), "physical_cores": physical,
        "simd_flags": [f for f in (cpu_flags() or []) if f.startswith(("avx", "amx", "fma", "sve", "bf16"))],
        "memory_bytes": memory, "threads": threads,
        "load_average_1_5_15": [round(x, 2) for x in load] if load else None,
        "python": platform.python_version(), "platform": platform.platform(),
        "versions": {m: _version(m) for m in ("mindspore", "onnxruntime", "onnx", "torch",
                                             "diffusers", "transformers", "numpy")},
        "env": {k: os.environ[k] for k in sorted(os.environ)
                if k.startswith(("OPENBLAS_", "OMP_", "MKL_"))},
        "svdeploy_git": _git_state(Path(__file__).resolve().parents[2]),
    }


def load_average() -> Optional[List[float]]:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


# ---------------------------------------------------------------------------------------------
# Inputs and files
# ---------------------------------------------------------------------------------------------
def demo_image(height: int, width: int) -> np.ndarray:
    """A deterministic RGB picture (uint8 H×W×3) with ramps, a wave and shapes."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    img[..., 0] = xx / max(width - 1, 1)
    img[..., 1] = yy / max(height - 1, 1)
    img[..., 2] = 0.5 + 0.5 * np.sin(xx / width * 2 * np.pi) * np.cos(yy / height * 2 * np.pi)
    img[height // 8: height // 8 + height // 4, width // 8: width // 8 + width // 4] = (1.0, 1.0, 0.0)
    disc = (yy - 0.65 * height) ** 2 + (xx - 0.6 * width) ** 2 < (0.18 * min(height, width)) ** 2
    img[disc] = (0.1, 0.2, 0.9)
    return (np.clip(img, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_json"):
        return value.to_json()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# svd-bench's writers: svdeploy.fsutil's atomic writes, creating the folder; its JSON also
# takes NumPy scalars, paths and objects with to_json, and keeps NaN (a failed measurement)
write_text_atomic = functools.partial(atomic_write_text, parents=True)
write_json_atomic = functools.partial(atomic_write_json, default=_json_default, allow_nan=True,
                                      parents=True)


def save_npz_atomic(path: Path, arrays: Dict[str, np.ndarray]) -> None:
    atomic_write_with(path, lambda tmp: np.savez(tmp, **arrays), suffix=".npz", parents=True)


def fmt_bytes(n: Optional[float]) -> str:
    if n is None:
        return "-"
    return f"{n / 2**20:,.0f} MiB" if n >= 2**20 else f"{n / 2**10:,.1f} KiB"


def fmt_seconds(s: Optional[float]) -> str:
    if s is None or s != s:  # NaN
        return "-"
    if s >= 100:
        return f"{s:.0f} s"
    if s >= 1:
        return f"{s:.2f} s"
    return f"{s * 1e3:.1f} ms"


__all__ = ["Stats", "time_repeated", "relative_l2", "ChildRun", "MemoryGuard", "ServedWorker",
           "run_measured", "run_worker",
           "machine_info",
           "load_average", "demo_image", "write_json_atomic", "write_text_atomic",
           "save_npz_atomic", "thread_env", "ort_session_options", "set_torch_threads",
           "set_mindspore_threads", "fmt_bytes", "fmt_seconds"]
