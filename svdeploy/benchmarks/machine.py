"""What svd-bench knows of the machine: thread settings for every library inside a
worker, CPU model and flags (bf16), library versions, git state, load average."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional


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
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
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
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical,
        "simd_flags": [
            f for f in (cpu_flags() or []) if f.startswith(("avx", "amx", "fma", "sve", "bf16"))
        ],
        "memory_bytes": memory,
        "threads": threads,
        "load_average_1_5_15": [round(x, 2) for x in load] if load else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {
            m: _version(m)
            for m in (
                "mindspore",
                "onnxruntime",
                "onnx",
                "torch",
                "diffusers",
                "transformers",
                "numpy",
            )
        },
        "env": {
            k: os.environ[k]
            for k in sorted(os.environ)
            if k.startswith(("OPENBLAS_", "OMP_", "MKL_"))
        },
        "svdeploy_git": _git_state(Path(__file__).resolve().parents[2]),
    }


def load_average() -> Optional[List[float]]:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


__all__ = [
    "set_torch_threads",
    "set_mindspore_threads",
    "ort_session_options",
    "thread_env",
    "BF16_CPU_FLAGS",
    "cpu_flags",
    "cpu_bf16_flags",
    "machine_info",
    "load_average",
]
