"""``run_benchmarks``: the library call behind svd-bench."""

from __future__ import annotations

import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

from .harness import SUITES, BenchSettings, Workspace
from .machine import machine_info
from .report import write_report
from .suites import run_suite

# Suites whose figures are set against the machine's GEMM peak.
PEAK_SUITES = ("graphs",)


def run_benchmarks(
    settings: BenchSettings,
    suites: Sequence[str],
    command: str,
    log: Callable[[str], None] = lambda _m: None,
) -> Dict[str, Any]:
    """Run ``suites`` in order, write report.json / report.md / <suite>.png into
    ``settings.out``, and return the report."""
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        raise ValueError(f"unknown suite(s) {', '.join(unknown)}; expected {', '.join(SUITES)}")
    started = time.perf_counter()
    settings.out.mkdir(parents=True, exist_ok=True)
    ws = Workspace(settings, log)
    report: Dict[str, Any] = {
        "command": command,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(settings.threads),
        "settings": settings.to_json(),
        "weights": ws.weights.to_json(),
        "suites": {},
    }
    peak = None
    if any(s in PEAK_SUITES for s in suites):
        peak = ws.gemm_peak()
        report["gemm_peak"] = peak
    for name in suites:
        log(f"suite {name}")
        t0 = time.perf_counter()
        try:
            result = run_suite(name, ws, peak)
        except Exception as exc:  # keep the other suites' figures; the report says what broke
            log(f"suite {name} failed: {type(exc).__name__}: {exc}")
            result = {
                "rows": [],
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()[-4000:],
            }
        result["seconds"] = time.perf_counter() - t0
        report["suites"][name] = result
        report["seconds"] = time.perf_counter() - started
        write_report(report, settings.out)  # after every suite, so a long run keeps its results
    report["workspace_failures"] = dict(ws.failures)
    report["seconds"] = time.perf_counter() - started
    write_report(report, settings.out)
    return report


def report_files(out: Path, suites: Sequence[str]) -> List[Path]:
    from .report import REPORT_JSON, REPORT_MD

    return [out / REPORT_JSON, out / REPORT_MD] + [out / f"{s}.png" for s in suites]


__all__ = ["run_benchmarks", "report_files", "SUITES"]
