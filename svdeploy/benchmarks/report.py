"""report.json, report.md and one PNG chart per suite."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from svdeploy.fsutil import atomic_write_with

from .common import fmt_bytes, fmt_seconds, write_json_atomic, write_text_atomic

REPORT_JSON = "report.json"
REPORT_MD = "report.md"


def _x(value: Optional[float], digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.2g}×" if value < 0.1 else f"{value:.{digits}f}×"


def _e(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1e}"


def _table(header: Sequence[str], rows: List[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _busy(row: Dict[str, Any]) -> str:
    """Cores the case's process kept busy on average (load / contention hint)."""
    value = row.get("cpu_per_wall")
    return "-" if value is None else f"{value:.2f}"


def _status(row: Dict[str, Any]) -> Optional[str]:
    if "skipped" in row:
        return f"skipped: {row['skipped']}"
    if "error" in row:
        return f"failed: {row['error']}"
    return None


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------
def md_machine(report: Dict[str, Any]) -> str:
    m = report["machine"]
    s = report["settings"]
    lines = [
        f"- command: `{report['command']}`",
        f"- machine: {m['cpu_model']}, {m['logical_cores']} logical cores, "
        f"{fmt_bytes(m.get('memory_bytes'))} RAM; threads per process: {m['threads']}; "
        f"load average at start {m.get('load_average_1_5_15')}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
        f"- svdeploy: commit {m['svdeploy_git'].get('commit')} with "
        f"{m['svdeploy_git'].get('modified_files')} modified tracked files",
        f"- model: `{s['config']}` ({s['variant']}), {s['frames']} frames {s['height']}×"
        f"{s['width']}, guidance batch {s['guidance_batch']}, decode chunk "
        f"{s['decode_chunk_size']}, dtype {s['dtype']}",
        f"- weights: {report['weights']['source']}"
        + (
            f"; no diffusers peer: {report['weights']['diffusers_unavailable']}"
            if report["weights"].get("diffusers_unavailable")
            else ""
        ),
    ]
    if m.get("env"):
        lines.append("- environment: " + ", ".join(f"{k}={v}" for k, v in m["env"].items()))
    for note in s.get("notes", []):
        lines.append(f"- note: {note}")
    return "\n".join(lines)


def md_peak(peak: Dict[str, Any]) -> str:
    rows = []
    for lib, r in peak["by_library"].items():
        if "gflops" in r:
            rows.append([lib, r["what"], f"{r['gflops']:.0f}", f"{r['best_gflops']:.0f}"])
        else:
            rows.append([lib, f"unavailable: {r.get('error')}", "-", "-"])
    head = (
        f"GEMM peak, {peak['n']}×{peak['n']}×{peak['n']}, {peak['threads']} threads: fp32 peak "
        f"= {peak['fp32_peak_gflops']:.0f} GFLOP/s ({peak['fp32_peak_library']})"
        if peak.get("fp32_peak_gflops")
        else "GEMM peak: unavailable"
    )
    if peak.get("bf16_peak_gflops"):
        head += f", bf16 peak = {peak['bf16_peak_gflops']:.0f} GFLOP/s (torch)"
    return head + "\n\n" + _table(["library", "what", "GFLOP/s (median)", "GFLOP/s (best)"], rows)


def md_export(result: Dict[str, Any]) -> str:
    rows = []
    for r in result["rows"]:
        status = _status(r)
        if status:
            rows.append(
                [
                    r["graph"],
                    r["format"],
                    status,
                    "",
                    "",
                    "",
                    fmt_bytes(r.get("peak_rss_bytes")),
                    "",
                ]
            )
            continue
        rows.append(
            [
                r["graph"],
                r["format"],
                fmt_seconds(r["wall_s"]),
                fmt_seconds(r["export_seconds"]),
                fmt_bytes(r["bytes"]),
                fmt_bytes(r.get("rss_after_imports_bytes")),
                fmt_bytes(r["peak_rss_bytes"]),
                _e(r.get("parity_max_rel_error")),
            ]
        )
    return (
        _table(
            [
                "graph",
                "format",
                "wall (process)",
                "export (trace+write)",
                "file",
                "RSS after imports",
                "peak RSS",
                "parity vs network",
            ],
            rows,
        )
        + f"\n\n{result['method']}. Validation {'on' if result['validate'] else 'off'}."
    )


def md_graphs(result: Dict[str, Any]) -> str:
    rows = []
    for r in result["rows"]:
        status = _status(r)
        base = [r["graph"], r["peer"], r["precision"]]
        if status:
            rows.append(base + [status] + [""] * 10)
            continue
        rows.append(
            base
            + [
                fmt_seconds(r["median_s"]),
                f"{fmt_seconds(r['p10_s'])} – {fmt_seconds(r['p90_s'])}",
                str(r["n"]),
                _standalone(r),
                _idle(r),
                _x(r.get("speedup_vs_diffusers")),
                f"{r['gflops_per_s']:.1f}",
                "-" if r.get("percent_of_peak") is None else f"{r['percent_of_peak']:.0f}%",
                _e(r.get("parity_rel_l2")),
                _busy(r),
            ]
        )
    graphs = []
    for r in result["rows"]:
        if r["graph"] not in [g for g, _, _ in graphs]:
            graphs.append((r["graph"], r["flops"], r["flops_svdeploy_schedule"]))
    flops = "; ".join(
        f"{g} {a / 1e9:.2f} GFLOP (svdeploy schedule {b / 1e9:.2f})" for g, a, b in graphs
    )
    text = _table(
        [
            "graph",
            "peer",
            "prec.",
            "median",
            "p10 – p90",
            "n",
            "standalone median (÷)",
            "idle peers' CPU",
            "speed-up vs diffusers",
            "GFLOP/s",
            "% of peak",
            "parity (rel. L2 vs diffusers fp32)",
            "CPU/wall",
        ],
        rows,
    )
    return (
        text + f"\n\nFLOPs per call: {flops}. {result['flops_note']}\n\n{result['method']}. "
        "Speed-up = diffusers' median at the same precision ÷ this median (>1 is faster). "
        + STANDALONE_NOTE
        + CPU_NOTE
    )


def _standalone(r: Dict[str, Any]) -> str:
    if r.get("standalone_median_s") is None:
        return "-"
    return (
        f"{fmt_seconds(r['standalone_median_s'])} "
        f"({r.get('interleaved_over_standalone', float('nan')):.2f})"
    )


def _idle(r: Dict[str, Any]) -> str:
    value = r.get("idle_peers_cpu_per_wall")
    return "-" if value is None else f"{value:.2f}"


STANDALONE_NOTE = (
    "Standalone = the same peer timed alone after the interleaved rounds (no "
    "other peer process exists); (÷) = interleaved median ÷ standalone median, "
    "≈ 1 when interleaving does not disturb the peer. Idle peers' CPU = cores "
    "the other peers' processes used while this peer was timed (≈ 0 with "
    "--freeze-idle). "
)


CPU_NOTE = (
    "CPU/wall = the case's CPU seconds ÷ wall seconds over its timed runs: close to "
    "the thread count when the machine was otherwise idle, lower when other processes "
    "competed for the cores (its wall times are then inflated)."
)


def md_e2e(result: Dict[str, Any]) -> str:
    rows = []
    for r in result["rows"]:
        status = _status(r)
        if status:
            rows.append([r["peer"], r["precision"], status] + [""] * 10)
            continue
        rows.append(
            [
                r["peer"],
                r["precision"],
                fmt_seconds(r["video_median_s"]),
                f"{fmt_seconds(r['video_p10_s'])} – {fmt_seconds(r['video_p90_s'])}",
                str(r["n_videos"]),
                _standalone(r),
                _idle(r),
                fmt_seconds(r["step_median_s"]),
                fmt_seconds(r.get("other_s")),
                _x(r.get("speedup_vs_diffusers")),
                _x(r.get("step_speedup_vs_diffusers")),
                "-"
                if r.get("parity_max_abs") is None
                else f"{r['parity_max_abs']:.1e} / {r['parity_rel_l2']:.1e}",
                _busy(r),
            ]
        )
    extra = ""
    if result.get("not_applicable"):
        extra = f"\n\nNot end-to-end peers: {', '.join(result['not_applicable'])}."
    return (
        _table(
            [
                "peer",
                "prec.",
                "s / video (median)",
                "p10 – p90",
                "videos",
                "standalone median (÷)",
                "idle peers' CPU",
                "s / step",
                "outside steps",
                "video speed-up",
                "step speed-up",
                "parity max abs / rel. L2",
                "CPU/wall",
            ],
            rows,
        )
        + f"\n\n{result['method']}.{extra} {STANDALONE_NOTE}{CPU_NOTE}"
    )


def md_memory(result: Dict[str, Any]) -> str:
    rows = []
    for r in result["rows"]:
        status = _status(r)
        base = [r["peer"], str(r["frames"]), str(r["chunk"])]
        if status:
            rows.append(base + [status, "", "", "", ""])
            continue
        rows.append(
            base
            + [
                fmt_bytes(r["peak_rss_bytes"]),
                fmt_bytes(r["rss_after_load_bytes"]),
                fmt_bytes(r["decode_peak_over_loaded_bytes"]),
                fmt_bytes(r["output_bytes"]),
                fmt_seconds(r["decode_s"]),
            ]
        )
    text = (
        _table(
            [
                "peer",
                "frames",
                "chunk",
                "peak RSS",
                "RSS loaded",
                "peak − loaded",
                "decoded frames",
                "decode time",
            ],
            rows,
        )
        + f"\n\n{result['method']}"
    )
    return text + md_memory_plan(result.get("plan_rows") or [])


def md_memory_plan(plan_rows: List[Dict[str, Any]]) -> str:
    """svd-run --plan against the measured peak RSS per stage (one whole run per backend)."""
    if not plan_rows:
        return ""
    stages = ("load", "encode", "denoise", "decode")
    rows = []
    for r in plan_rows:
        status = _status(r)
        if status:
            rows.append([r["backend"], status] + [""] * (len(stages) + 1))
            continue
        rows.append(
            [
                r["backend"],
                f"{fmt_bytes(r['predicted_peak_bytes'])} / {fmt_bytes(r['measured_peak_bytes'])}",
            ]
            + [
                f"{fmt_bytes(r['predicted_bytes'][s])} / {fmt_bytes(r['measured_bytes'][s])}"
                for s in stages
            ]
            + [f"{100 * r['plan_error']:+.1f} %"]
        )
    return (
        "\n\n### memory plan: predicted / measured peak RSS\n\n"
        + _table(["backend", "peak"] + list(stages) + ["error"], rows)
        + "\n\nOne child process per backend runs one whole video (2 steps: ONNX Runtime "
        "sizes its arenas on a second call); each stage's peak is the process's VmHWM "
        "reset before the stage (svdeploy.benchmarks.memplan)."
    )


def md_train(result: Dict[str, Any]) -> str:
    rows = []
    for r in result["rows"]:
        status = _status(r)
        if status:
            rows.append([r["peer"], r["precision"], status, "", "", "", "", "", ""])
            continue
        rows.append(
            [
                r["peer"],
                r["precision"],
                fmt_seconds(r["step_median_s"]),
                f"{fmt_seconds(r['step_p10_s'])} – {fmt_seconds(r['step_p90_s'])}",
                str(r["n"]),
                fmt_seconds(r["compile_s"]),
                _x(r.get("speedup_vs_diffusers")),
                fmt_bytes(r.get("peak_rss_bytes")),
                _busy(r),
            ]
        )
    impl = "; ".join(
        f"{r['peer']}: {r['setup']['implementation']}" for r in result["rows"] if r.get("setup")
    )
    return (
        _table(
            [
                "peer",
                "prec.",
                "s / step (median)",
                "p10 – p90",
                "n",
                "compile (first − median)",
                "speed-up vs diffusers",
                "peak RSS",
                "CPU/wall",
            ],
            rows,
        )
        + f"\n\n{result['method']}. {impl}. {CPU_NOTE}"
    )


def md_serve(result: Dict[str, Any]) -> str:
    rows = []
    for r in result["rows"]:
        rows.append(
            [
                str(r["clients"]),
                str(r["replicas"]),
                "–" if r["videos_per_s"] is None else f"{r['videos_per_s']:.3f}",
                fmt_seconds(r["latency_p50_s"]),
                fmt_seconds(r["latency_p90_s"]),
                fmt_seconds(r["latency_p99_s"]),
                fmt_seconds(r["run_median_s"]),
                f"{r['succeeded']} / {r['accepted']}",
                str(r["lost"]),
                str(r["rejected_429"]),
                fmt_bytes(r["replica_rss_bytes"]),
            ]
        )
    return (
        _table(
            [
                "clients",
                "replicas",
                "videos / s",
                "latency p50",
                "p90",
                "p99",
                "run (median)",
                "succeeded / accepted",
                "lost",
                "429",
                "replica RSS",
            ],
            rows,
        )
        + f"\n\n{result['method']}."
    )


MD_SUITES = {
    "export": md_export,
    "graphs": md_graphs,
    "e2e": md_e2e,
    "memory": md_memory,
    "train": md_train,
    "serve": md_serve,
}


def render_markdown(report: Dict[str, Any]) -> str:
    parts = [f"# svd-bench report ({', '.join(report['suites'])})", "", md_machine(report), ""]
    if report.get("gemm_peak"):
        parts += ["## Limits", "", md_peak(report["gemm_peak"]), ""]
    for name, result in report["suites"].items():
        body = (
            f"The suite failed: {result['error']}" if "error" in result else MD_SUITES[name](result)
        )
        parts += [
            f"## {name}",
            "",
            body,
            "",
            f"Load average before/after: {result.get('load_average_before')} / "
            f"{result.get('load_average_after')}. Chart: `{name}.png`.",
            "",
        ]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# Charts
# ---------------------------------------------------------------------------------------------


def _no_data(ax: Any, text: str = "no successful measurement") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def _chart_export(rows: List[Dict[str, Any]]) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.5))
    ax1, ax2 = fig.subplots(1, 2)
    labels = [f"{r['graph']}\n{r['format']}" for r in rows]
    if rows:
        ax1.bar(labels, [r["wall_s"] for r in rows], label="process wall")
        ax1.bar(labels, [r["export_seconds"] for r in rows], label="trace + write")
        ax1.set_ylabel("seconds")
        ax1.legend()
        ax2.bar(labels, [r["peak_rss_bytes"] / 2**20 for r in rows])
        ax2.set_ylabel("peak RSS (MiB)")
        for ax in (ax1, ax2):
            ax.tick_params(axis="x", labelsize=7)
    else:
        _no_data(ax1)
        _no_data(ax2)
    return fig


def _chart_graphs(rows: List[Dict[str, Any]]) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.8))
    ax = fig.subplots()
    graphs = list(dict.fromkeys(r["graph"] for r in rows))
    peers = list(dict.fromkeys(r["peer"] for r in rows))
    if rows:
        width = 0.8 / max(len(peers), 1)
        for j, peer in enumerate(peers):
            xs, ys, lo, hi = [], [], [], []
            for i, g in enumerate(graphs):
                match = [r for r in rows if r["graph"] == g and r["peer"] == peer]
                if match:
                    r = match[0]
                    xs.append(i + (j - (len(peers) - 1) / 2) * width)
                    ys.append(r["median_s"])
                    lo.append(r["median_s"] - r["p10_s"])
                    hi.append(r["p90_s"] - r["median_s"])
            ax.bar(xs, ys, width, yerr=[lo, hi], label=peer, capsize=2)
        ax.set_xticks(range(len(graphs)), graphs)
        ax.set_yscale("log")
        ax.set_ylabel("seconds per call (median, p10–p90)")
        ax.legend(fontsize=8)
    else:
        _no_data(ax)
    return fig


def _chart_e2e(rows: List[Dict[str, Any]]) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.5))
    ax1, ax2 = fig.subplots(1, 2)
    if rows:
        labels = [r["peer"] for r in rows]
        ax1.bar(
            labels,
            [r["video_median_s"] for r in rows],
            yerr=[
                [r["video_median_s"] - r["video_p10_s"] for r in rows],
                [r["video_p90_s"] - r["video_median_s"] for r in rows],
            ],
            capsize=3,
        )
        ax1.set_ylabel("seconds per video")
        ax2.bar(labels, [r["step_median_s"] for r in rows])
        ax2.set_ylabel("seconds per denoising step")
        for ax in (ax1, ax2):
            ax.tick_params(axis="x", labelsize=7, rotation=20)
    else:
        _no_data(ax1)
        _no_data(ax2)
    return fig


def _chart_memory(rows: List[Dict[str, Any]]) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.8))
    ax = fig.subplots()
    if rows:
        for peer in dict.fromkeys(r["peer"] for r in rows):
            for chunk in sorted({r["chunk"] for r in rows if r["peer"] == peer}):
                pts = sorted(
                    (r["frames"], r["peak_rss_bytes"] / 2**20)
                    for r in rows
                    if r["peer"] == peer and r["chunk"] == chunk
                )
                ax.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    marker="o",
                    label=f"{peer}, chunk {chunk}",
                )
        ax.set_xlabel("frames decoded")
        ax.set_ylabel("peak RSS of the process (MiB)")
        ax.legend(fontsize=7)
    else:
        _no_data(ax)
    return fig


def _chart_serve(rows: List[Dict[str, Any]]) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    if rows:
        labels = [f"{r['clients']} client(s)" for r in rows]
        for key, label in (
            ("latency_p50_s", "p50"),
            ("latency_p90_s", "p90"),
            ("latency_p99_s", "p99"),
        ):
            ax.plot(labels, [r[key] or 0 for r in rows], marker="o", label=f"latency {label}")
        ax.set_ylabel("seconds, submit → video received")
        ax.legend()
    else:
        _no_data(ax)
    return fig


def _chart_train(rows: List[Dict[str, Any]]) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    if rows:
        labels = [r["peer"] for r in rows]
        ax.bar(labels, [r["step_median_s"] for r in rows], label="step (median)")
        ax.bar(
            labels,
            [r["compile_s"] for r in rows],
            bottom=[r["step_median_s"] for r in rows],
            label="compile (first step − median)",
            alpha=0.6,
        )
        ax.set_ylabel("seconds")
        ax.legend()
    else:
        _no_data(ax)
    return fig


# one chart per suite, drawn from its rows (errors and skipped cases left out)
CHARTS = {
    "export": _chart_export,
    "graphs": _chart_graphs,
    "e2e": _chart_e2e,
    "memory": _chart_memory,
    "serve": _chart_serve,
    "train": _chart_train,
}


def chart(name: str, result: Dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)

    rows = [r for r in result["rows"] if "error" not in r and "skipped" not in r]
    fig = CHARTS[name](rows)
    fig.suptitle(title, fontsize=10)
    atomic_write_with(
        path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight"), suffix=".png"
    )


def write_report(report: Dict[str, Any], out: Path) -> List[Path]:
    """report.json, report.md and <suite>.png in ``out``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    s = report["settings"]
    for name, result in report["suites"].items():
        path = out / f"{name}.png"
        chart(
            name,
            result,
            path,
            f"svd-bench {name}: {s['variant']}, {s['frames']} frames "
            f"{s['height']}×{s['width']}, {report['machine']['threads']} threads",
        )
        result["chart"] = path.name
        written.append(path)
    write_json_atomic(out / REPORT_JSON, report)
    write_text_atomic(out / REPORT_MD, render_markdown(report))
    return [out / REPORT_JSON, out / REPORT_MD] + written


__all__ = ["write_report", "render_markdown", "chart", "REPORT_JSON", "REPORT_MD"]
