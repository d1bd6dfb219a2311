"""The five svd-bench suites. Each returns a JSON-ready dict with ``rows`` (one per measured
case, failures included with their reason) and whatever the report needs.

Every case runs in its own process (svdeploy.benchmarks.worker) so that its peak RSS, thread
pools and imported libraries are its own.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from svdeploy.contract import TAIL_GRAPH
from svdeploy.contract import relative_error as relative_l2

from .common import save_npz_atomic
from .flops import graph_flops
from .harness import GRAPHS, BenchSettings, Workspace
from .machine import load_average
from .peers import (
    ARTIFACT_FORMAT,
    OPENVINO_PEERS,
    PEER_LABELS,
    TORCH_PEERS,
    UNET_ONLY,
    openvino_skip_reason,
    peer_precision,
    reference_peer,
)
from .processes import ChildRun, ServedWorker
from .stats import Stats

Log = Callable[[str], None]


def _skip_reason(ws: Workspace, peer: str, graph: Optional[str] = None) -> Optional[str]:
    s = ws.s
    if peer in TORCH_PEERS and not ws.has_diffusers:
        return f"torch/diffusers unavailable: {ws.weights.diffusers_unavailable}"
    if graph is not None and peer in UNET_ONLY and graph != "unet":
        return "U-Net only (the comparison point users cite)"
    fmt = ARTIFACT_FORMAT.get(peer)
    if fmt and fmt not in s.formats:
        return f"needs {fmt} graphs; --formats is {','.join(s.formats)}"
    if peer in ("onnxruntime",) + OPENVINO_PEERS and s.dtype == "bf16":
        return "no bf16 ONNX export"
    if peer in OPENVINO_PEERS:
        return openvino_skip_reason(peer)
    return None


def _process(run: Any) -> Dict[str, Any]:
    """What every measured case records about its process: peak RSS, how many cores it kept
    busy (≈ --threads when nothing else competed), and the machine's load when it started."""
    return {
        "peak_rss_bytes": run.peak_rss_bytes,
        "cpu_per_wall": round(run.cpu_per_wall, 2),
        "load_average_1m": run.load_average_1m,
        "peak_rss_polled_bytes": run.peak_rss_psutil_bytes,
    }


def _graph_names(s: BenchSettings) -> List[str]:
    names = list(s.graphs)
    if "vae_decoder" in names and s.frames % s.decode_chunk_size:
        names.insert(names.index("vae_decoder") + 1, TAIL_GRAPH)
    return names


def _flops(s: BenchSettings, graph: str, mode: str) -> int:
    return graph_flops(
        s.cfg,
        graph,
        frames=s.frames,
        height=s.height,
        width=s.width,
        guidance_batch=s.guidance_batch,
        decode_chunk_size=s.decode_chunk_size,
        mode=mode,
    ).total  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------
def suite_export(ws: Workspace) -> Dict[str, Any]:
    """svd-export of each graph in each format, one process per export: wall seconds (network
    build, trace, ONNX post-pass, validation), the exporter's own seconds, file size, peak RSS,
    parity against the in-memory network."""
    s = ws.s
    rows: List[Dict[str, Any]] = []
    for graph in s.graphs:
        for fmt in s.formats:
            ws.log(f"export: {graph}.{fmt}")
            tmp = Path(tempfile.mkdtemp(prefix=".export-bench-", dir=s.work))
            try:
                spec = dict(
                    ws.worker_base(),
                    out_dir=str(tmp / "artifact"),
                    formats=[fmt],
                    graphs=[graph],
                    validate=s.export_validate,
                )
                run = ws.run("export", spec)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            row: Dict[str, Any] = {
                "graph": graph,
                "format": fmt,
                "dtype": s.dtype,
                "wall_s": run.seconds,
                **_process(run),
                "peak_rss_psutil_bytes": run.peak_rss_psutil_bytes,
            }
            if not run.ok:
                row["error"] = run.error()
            else:
                reports = run.result["reports"]
                row.update(
                    rss_after_imports_bytes=run.result["rss_after_imports_bytes"],
                    export_seconds=sum(r["export_seconds"] for r in reports),
                    bytes=sum(r["bytes"] for r in reports),
                    files=[r["file"] for r in reports],
                    parity_max_rel_error=max(
                        (
                            r["parity_max_rel_error"]
                            for r in reports
                            if r["parity_max_rel_error"] is not None
                        ),
                        default=None,
                    ),
                    tolerance=reports[0]["tolerance"] if reports else None,
                )
            rows.append(row)
    return {
        "rows": rows,
        "validate": s.export_validate,
        "method": "one child process per (graph, format): svdeploy.export.export_artifact("
        "graphs=[graph], formats=(format,)); peak RSS = the child's own high-water "
        "mark (VmHWM, read by the child at its end)",
    }


# ---------------------------------------------------------------------------------------------
# graphs
# ---------------------------------------------------------------------------------------------
def measure_peers(
    ws: Workspace, kind: str, specs: Dict[str, Dict[str, Any]], repeats: int, warmups: int
) -> Dict[str, Tuple[ChildRun, List[Dict[str, Any]]]]:
    """Load each peer in its own served worker, then time ``repeats`` calls per peer.

    interleaved (default): all peers of the group are loaded (one after the other), then take
    turns call by call, the first of each round rotating; so every peer sees the same load of
    the machine over time and their ratios hold even when other processes come and go. While
    one peer is timed the others are frozen (SIGSTOP, --freeze-idle): idle thread pools of
    ONNX Runtime, OpenMP and MindSpore spin-wait and would take its cores. Every call records
    the CPU seconds the other peers' processes used meanwhile (``others_cpu``).
    sequential: one peer at a time (for models too large to hold several peers in memory).
    A peer whose timed calls exceed --case-budget stops after at least 3.
    """
    s = ws.s
    peers = list(specs)
    groups = [peers] if s.schedule == "interleaved" else [[p] for p in peers]
    results: Dict[str, Tuple[ChildRun, List[Dict[str, Any]]]] = {}
    for group in groups:
        workers: Dict[str, ServedWorker] = {}
        samples: Dict[str, List[Dict[str, Any]]] = {p: [] for p in group}
        try:
            for peer in group:
                ws.log(f"{kind}: loading {peer}")
                workers[peer] = ws.serve(kind, specs[peer])
                if s.freeze_idle:
                    workers[peer].freeze(True)
            spent = {p: 0.0 for p in group}
            for _ in range(warmups):
                for peer in group:
                    _timed_request(workers, peer, "WARMUP", s.freeze_idle)
            for i in range(repeats):
                live = [p for p in group if workers[p].error is None]
                shift = i % max(len(live), 1)
                for peer in live[shift:] + live[:shift]:
                    if len(samples[peer]) >= 3 and spent[peer] > s.case_budget_s:
                        continue
                    done = _timed_request(workers, peer, "CALL", s.freeze_idle)
                    if done is not None:
                        samples[peer].append(done)
                        spent[peer] += done["wall"]
                if i == 0:
                    ws.log(
                        f"{kind}: round 1 of {repeats}: "
                        + ", ".join(
                            f"{p} {samples[p][0]['wall']:.3g} s" for p in group if samples[p]
                        )
                    )
        finally:
            for worker in workers.values():
                worker.freeze(False)  # a stopped process cannot read QUIT
            for peer, worker in workers.items():
                results[peer] = (worker.close(), samples[peer])
    return results


def _timed_request(
    workers: Dict[str, ServedWorker], peer: str, command: str, freeze_others: bool
) -> Optional[Dict[str, Any]]:
    """One request to ``peer`` (thawed for it when the others are frozen), with the CPU
    seconds the other workers used during it."""
    others = {p: w for p, w in workers.items() if p != peer}
    before = {p: w.cpu_seconds() for p, w in others.items()}
    if freeze_others:
        workers[peer].freeze(False)
    try:
        done = workers[peer].request(command)
    finally:
        if freeze_others:
            workers[peer].freeze(True)
    if done is not None:
        used = {p: w.cpu_seconds() - before[p] for p, w in others.items()}
        done["others_cpu"] = sum(used.values())
        done["others_cpu_by_peer"] = used
    return done


def measure_standalone(
    ws: Workspace, kind: str, specs: Dict[str, Dict[str, Any]], warmups: int
) -> Dict[str, Optional[Stats]]:
    """Each peer alone (no other peer process exists): load, warm up, --standalone-repeats
    timed calls. What a user running only that implementation would measure."""
    s = ws.s
    out: Dict[str, Optional[Stats]] = {}
    if s.standalone_repeats < 1:
        return out
    for peer, spec in specs.items():
        ws.log(f"{kind}: {peer} standalone, {s.standalone_repeats} calls")
        worker = ws.serve(
            kind,
            dict(spec, output_path=str(Path(spec["output_path"]).with_suffix(".standalone.npz"))),
        )
        calls = []
        try:
            for _ in range(warmups):
                worker.request("WARMUP")
            for _ in range(s.standalone_repeats):
                done = worker.request("CALL")
                if done is not None:
                    calls.append(done)
        finally:
            worker.close()
        out[peer] = _stats(calls) if calls else None
    return out


def _add_standalone(
    row: Dict[str, Any], samples: List[Dict[str, Any]], alone: Optional[Stats], median_key: str
) -> None:
    """Standalone median beside the interleaved one, and the idle peers' CPU during calls."""
    wall = sum(d["wall"] for d in samples)
    if wall > 0 and any("others_cpu" in d for d in samples):
        row["idle_peers_cpu_per_wall"] = round(
            sum(d.get("others_cpu", 0.0) for d in samples) / wall, 3
        )
        by_peer: Dict[str, float] = {}
        for d in samples:
            for other, seconds in d.get("others_cpu_by_peer", {}).items():
                by_peer[other] = by_peer.get(other, 0.0) + seconds
        row["idle_cpu_per_wall_by_peer"] = {p: round(v / wall, 3) for p, v in by_peer.items()}
    if alone is not None and alone.n:
        row["standalone"] = alone.to_json()
        row["standalone_median_s"] = alone.median
        if row.get(median_key):
            row["interleaved_over_standalone"] = row[median_key] / alone.median


def _stats(samples: List[Dict[str, Any]]) -> Stats:
    return Stats([d["wall"] for d in samples], [d["cpu"] for d in samples])


def suite_graphs(ws: Workspace, peak: Dict[str, Any]) -> Dict[str, Any]:
    s = ws.s
    needed_formats = sorted(
        {ARTIFACT_FORMAT[p] for p in s.peers if p in ARTIFACT_FORMAT} & set(s.formats)
    )
    subset = None if set(s.graphs) == set(GRAPHS) else list(s.graphs)
    artifact = ws.artifact(needed_formats, graphs=subset) if needed_formats else None
    plain_path, plain_info = (
        ws.plain_onnx() if "plain-onnx" in s.peers and "unet" in s.graphs else (None, {})
    )
    rows: List[Dict[str, Any]] = []
    for graph in _graph_names(s):
        graph_rows, specs = _graph_specs(
            ws, graph, artifact, needed_formats, plain_path, plain_info
        )
        ws.log(f"graphs: {graph} ({', '.join(specs)})")
        measured = measure_peers(ws, "graph", specs, s.repeats, max(s.warmup - 1, 0))
        alone = measure_standalone(ws, "graph", specs, max(s.warmup - 1, 0))
        outputs = _record_graph_timings(graph_rows, specs, measured, alone)
        ordered = [graph_rows[p] for p in s.peers]
        _add_comparisons(ordered, outputs, peak, ws.has_diffusers)
        rows.extend(ordered)
    return {
        "rows": rows,
        "plain_onnx": plain_info,
        "artifact": str(artifact) if artifact else None,
        "schedule": s.schedule,
        "method": _graphs_method(s),
        "flops_note": "flops = diffusers' schedule of the same math (full one-token "
        "cross-attention); flops_svdeploy_schedule = what svdeploy's graphs "
        "compute (to_v/to_out of the single context token, broadcast). "
        "GFLOP/s and % of peak use `flops` for every peer.",
    }


def _graph_specs(
    ws: Workspace,
    graph: str,
    artifact: Optional[Path],
    needed_formats: List[str],
    plain_path: Optional[Path],
    plain_info: Dict[str, Any],
) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, Dict[str, Any]]]:
    """(a row per peer, a worker spec per peer that can run ``graph``); a peer that cannot
    says why in its row's ``skipped``."""
    s = ws.s
    inputs_path, order = ws.graph_inputs(graph)
    flops_d = _flops(s, graph, "diffusers")
    flops_s = _flops(s, graph, "svdeploy")
    graph_rows: Dict[str, Dict[str, Any]] = {}
    specs: Dict[str, Dict[str, Any]] = {}
    for peer in s.peers:
        row: Dict[str, Any] = {
            "graph": graph,
            "peer": peer,
            "label": PEER_LABELS[peer],
            "precision": peer_precision(peer, s.dtype),
            "flops": flops_d,
            "flops_svdeploy_schedule": flops_s,
        }
        graph_rows[peer] = row
        reason = _skip_reason(ws, peer, graph)
        if reason is None and peer in ARTIFACT_FORMAT and artifact is None:
            reason = ws.artifact_error(needed_formats)
        if reason is None and peer == "plain-onnx" and plain_path is None:
            reason = plain_info.get("error", "torch.onnx export unavailable")
        if reason:
            row["skipped"] = reason
            continue
        specs[peer] = dict(
            ws.worker_base(),
            peer=peer,
            graph=graph,
            artifact_dir=str(artifact) if artifact else None,
            plain_onnx_path=str(plain_path) if plain_path else None,
            inputs_path=str(inputs_path),
            input_order=order,
            output_path=str(s.work / "outputs" / f"{graph}-{peer}.npz"),
        )
    return graph_rows, specs


def _record_graph_timings(
    graph_rows: Dict[str, Dict[str, Any]],
    specs: Dict[str, Dict[str, Any]],
    measured: Dict[str, Any],
    alone: Dict[str, Any],
) -> Dict[str, Path]:
    """Each measured peer's statistics into its row; returns the output file of every peer
    that produced one."""
    outputs: Dict[str, Path] = {}
    for peer, (run, samples) in measured.items():
        row = graph_rows[peer]
        row.update(_process(run))
        if not run.ok or not samples:
            row["error"] = run.error() if not run.ok else "no timed call succeeded"
            continue
        stats = _stats(samples)
        r = run.result
        row.update(
            stats=stats.to_json(),
            median_s=stats.median,
            p10_s=stats.p10,
            p90_s=stats.p90,
            n=stats.n,
            load_s=r["load_s"],
            first_call_s=r["first_call_s"],
            rss_after_load_bytes=r["rss_after_load_bytes"],
            setup=r.get("setup"),
            cpu_per_wall=round(stats.cpu_per_wall or 0.0, 2),
        )
        _add_standalone(row, samples, alone.get(peer), "median_s")
        outputs[peer] = Path(specs[peer]["output_path"])
    return outputs


def _graphs_method(s: BenchSettings) -> str:
    return (
        f"per graph, one process per peer ({s.schedule}): load, 1 untimed first "
        f"call (compilation), {max(s.warmup - 1, 0)} more warm-up calls, then "
        f"{s.repeats} timed calls on identical inputs"
        + (", the peers taking turns call by call" if s.schedule == "interleaved" else "")
        + "; median and p10/p90"
    )


def _add_comparisons(
    rows: List[Dict[str, Any]], outputs: Dict[str, Path], peak: Dict[str, Any], has_diffusers: bool
) -> None:
    """Speed-up vs diffusers at the same precision, parity vs diffusers fp32 (or vs the
    in-memory network when diffusers is unavailable), achieved GFLOP/s and % of peak."""
    medians = {r["peer"]: r["median_s"] for r in rows if "median_s" in r}
    parity_ref = (
        "diffusers"
        if has_diffusers and "diffusers" in outputs
        else ("ms-pynative" if "ms-pynative" in outputs else None)
    )
    reference = None
    if parity_ref is not None:
        with np.load(outputs[parity_ref]) as data:
            reference = data["output"]
    for row in rows:
        if "median_s" not in row:
            continue
        ref_peer = reference_peer(row["precision"])
        if ref_peer in medians:
            row["speedup_vs_diffusers"] = medians[ref_peer] / row["median_s"]
            row["speedup_reference"] = ref_peer
        row["gflops_per_s"] = row["flops"] / row["median_s"] / 1e9
        peak_value = (
            peak.get("fp32_peak_gflops")
            if row["precision"] == "fp32"
            else peak.get("bf16_peak_gflops")
        )
        if peak_value:
            row["percent_of_peak"] = 100.0 * row["gflops_per_s"] / peak_value
        if reference is not None and row["peer"] in outputs:
            with np.load(outputs[row["peer"]]) as data:
                try:
                    row["parity_rel_l2"] = relative_l2(data["output"], reference)
                except ValueError as exc:
                    row["parity_error"] = str(exc)
            row["parity_reference"] = parity_ref


# ---------------------------------------------------------------------------------------------
# e2e
# ---------------------------------------------------------------------------------------------
E2E_PEERS = {
    "onnxruntime": "svdeploy-onnxruntime",
    "ms-graphcell": "svdeploy-mindspore",
    "openvino": "svdeploy-openvino",
    "openvino-bf16": "svdeploy-openvino-bf16",
    "diffusers": "diffusers",
    "diffusers-bf16": "diffusers-bf16",
}
E2E_LABELS = {
    "svdeploy-onnxruntime": "svdeploy VideoPipeline, ONNX Runtime backend",
    "svdeploy-openvino": "svdeploy VideoPipeline, OpenVINO backend, fp32",
    "svdeploy-openvino-bf16": "svdeploy VideoPipeline, OpenVINO backend, bf16",
    "svdeploy-mindspore": "svdeploy VideoPipeline, MindSpore (MindIR) backend",
    "diffusers": "diffusers StableVideoDiffusionPipeline, fp32",
    "diffusers-bf16": "diffusers StableVideoDiffusionPipeline, bf16 autocast",
}


def suite_e2e(ws: Workspace) -> Dict[str, Any]:
    s = ws.s
    graph_peer = {v: k for k, v in E2E_PEERS.items()}
    peers = [E2E_PEERS[p] for p in s.peers if p in E2E_PEERS]
    not_applicable = [p for p in s.peers if p not in E2E_PEERS]
    needed = sorted(
        {ARTIFACT_FORMAT[graph_peer[p]] for p in peers if graph_peer[p] in ARTIFACT_FORMAT}
        & set(s.formats)
    )
    artifact = ws.artifact(needed) if needed else None
    inputs_path = _e2e_inputs(s)
    rows, specs = _e2e_specs(ws, peers, artifact, needed, inputs_path)
    ws.log(f"e2e: {', '.join(specs)}; {s.e2e_repeats} videos of {s.steps} steps each")
    measured = measure_peers(ws, "e2e", specs, s.e2e_repeats, max(s.warmup - 1, 0))
    alone = measure_standalone(ws, "e2e", specs, max(s.warmup - 1, 0))
    frames_paths = _record_e2e_timings(rows, specs, measured, alone)
    ordered = [rows[p] for p in peers]
    _add_e2e_comparisons(ordered, frames_paths)
    return {
        "rows": ordered,
        "not_applicable": not_applicable,
        "schedule": s.schedule,
        "method": _e2e_method(s),
    }


def _e2e_inputs(s: BenchSettings) -> Path:
    """The image, image noise and initial latents every peer generates from (seeded), saved."""
    from .common import demo_image

    rng = np.random.default_rng(s.seed)
    h, w = s.latent_hw
    image_noise = rng.standard_normal((1, 3, s.height, s.width), dtype=np.float32)
    latents = rng.standard_normal((1, s.frames, s.cfg.latent_channels, h, w), dtype=np.float32)
    inputs_path = s.work / "inputs" / f"e2e-f{s.frames}-{s.height}x{s.width}-s{s.seed}.npz"
    save_npz_atomic(
        inputs_path,
        {"image": demo_image(s.height, s.width), "image_noise": image_noise, "latents": latents},
    )
    return inputs_path


def _e2e_specs(
    ws: Workspace, peers: List[str], artifact: Optional[Path], needed: List[str], inputs_path: Path
) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, Dict[str, Any]]]:
    """(a row per peer, a worker spec per peer that can run); a peer that cannot says why in
    its row's ``skipped``."""
    s = ws.s
    graph_peer = {v: k for k, v in E2E_PEERS.items()}
    rows: Dict[str, Dict[str, Any]] = {}
    specs: Dict[str, Dict[str, Any]] = {}
    for peer in peers:
        gp = graph_peer[peer]
        row: Dict[str, Any] = {
            "peer": peer,
            "label": E2E_LABELS[peer],
            "precision": peer_precision(gp, s.dtype),
            "steps": s.steps,
            "frames": s.frames,
        }
        rows[peer] = row
        reason = _skip_reason(ws, gp)
        if reason is None and gp in ARTIFACT_FORMAT and artifact is None:
            reason = ws.artifact_error(needed)
        if reason:
            row["skipped"] = reason
            continue
        specs[peer] = dict(
            ws.worker_base(),
            peer=peer,
            artifact_dir=str(artifact) if artifact else None,
            inputs_path=str(inputs_path),
            steps=s.steps,
            output_path=str(s.work / "outputs" / f"e2e-{peer}.npz"),
        )
    return rows, specs


def _record_e2e_timings(
    rows: Dict[str, Dict[str, Any]],
    specs: Dict[str, Dict[str, Any]],
    measured: Dict[str, Any],
    alone: Dict[str, Any],
) -> Dict[str, Path]:
    """Video and per-step statistics of each measured peer into its row; returns the frames
    file of every peer that produced one."""
    frames_paths: Dict[str, Path] = {}
    for peer, (run, samples) in measured.items():
        row = rows[peer]
        row.update(_process(run))
        if not run.ok or not samples:
            row["error"] = run.error() if not run.ok else "no video succeeded"
            continue
        r = run.result
        timings = [d["timings"] for d in samples]
        video = _stats(samples)
        step = Stats([t for d in timings for t in d["per_step_s"]])
        row.update(
            video=video.to_json(),
            step=step.to_json(),
            video_median_s=video.median,
            video_p10_s=video.p10,
            video_p90_s=video.p90,
            step_median_s=step.median,
            step_p10_s=step.p10,
            step_p90_s=step.p90,
            n_videos=video.n,
            load_s=r["load_s"],
            warmup_s=r["warmup_s"],
            runs=timings,
            other_s=_non_step_seconds(timings),
            cpu_per_wall=round(video.cpu_per_wall or 0.0, 2),
        )
        _add_standalone(row, samples, alone.get(peer), "video_median_s")
        frames_paths[peer] = Path(specs[peer]["output_path"])
    return frames_paths


def _add_e2e_comparisons(rows: List[Dict[str, Any]], frames_paths: Dict[str, Path]) -> None:
    """Speed-ups against diffusers at the same precision, frame parity against diffusers fp32."""
    medians = {r["peer"]: r for r in rows if "video_median_s" in r}
    reference = None
    if "diffusers" in frames_paths:
        with np.load(frames_paths["diffusers"]) as data:
            reference = data["frames"]
    for row in rows:
        if "video_median_s" not in row:
            continue
        ref = medians.get(reference_peer(row["precision"]))
        if ref:
            row["speedup_vs_diffusers"] = ref["video_median_s"] / row["video_median_s"]
            row["step_speedup_vs_diffusers"] = ref["step_median_s"] / row["step_median_s"]
            row["speedup_reference"] = ref["peer"]
        if reference is not None:
            with np.load(frames_paths[row["peer"]]) as data:
                frames = data["frames"]
            row["parity_max_abs"] = float(np.abs(frames - reference).max())
            row["parity_rel_l2"] = relative_l2(frames, reference)


def _e2e_method(s: BenchSettings) -> str:
    return (
        f"one process per peer ({s.schedule}): load, a 1-step warm-up video, then "
        f"{s.e2e_repeats} videos of {s.steps} steps"
        + (", the peers taking turns video by video" if s.schedule == "interleaved" else "")
        + ", from the same image, image "
        "noise and initial latents; per-step = time of each denoising step "
        "(U-Net call, guidance, Euler update); parity = output frames in [0, 1] "
        "against diffusers fp32"
    )


def _non_step_seconds(runs: List[Dict[str, Any]]) -> Optional[float]:
    """Median seconds of a video outside the denoising steps (encode, decode, glue)."""
    values = [r["end_to_end_s"] - sum(r["per_step_s"]) for r in runs if r.get("per_step_s")]
    return float(np.median(values)) if values else None


# ---------------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------------
MEMORY_PEERS = {
    "onnxruntime": "svdeploy-onnxruntime",
    "ms-graphcell": "svdeploy-mindspore",
    "openvino": "svdeploy-openvino",
    "openvino-bf16": "svdeploy-openvino-bf16",
    "diffusers": "diffusers",
}


def suite_memory(ws: Workspace) -> Dict[str, Any]:
    """Peak RSS of decoding F frames in chunks of K, one process per case."""
    s = ws.s
    graph_peer = {v: k for k, v in MEMORY_PEERS.items()}
    peers = [MEMORY_PEERS[p] for p in s.peers if p in MEMORY_PEERS]
    rows: List[Dict[str, Any]] = []
    for chunk in s.memory_chunks:
        needed = sorted(
            {ARTIFACT_FORMAT[graph_peer[p]] for p in peers if graph_peer[p] in ARTIFACT_FORMAT}
            & set(s.formats)
        )
        artifact = (
            ws.artifact(needed, frames=chunk, chunk=chunk, graphs=["vae_decoder"])
            if needed
            else None
        )
        for frames in s.memory_frames:
            for peer in peers:
                rows.append(
                    _decode_row(ws, peer, graph_peer[peer], frames, chunk, artifact, needed)
                )
    return {
        "rows": rows,
        "plan_rows": _plan_rows(ws, peers, graph_peer),
        "method": "one child process per (peer, frames, chunk): load the decoder (svdeploy: "
        "the exported vae_decoder graph for chunk K through the runtime backend, "
        "called F/K times as VideoPipeline._decode does; diffusers: "
        "StableVideoDiffusionPipeline.decode_latents on the VAE), decode random "
        "latents once. peak = the child's own high-water mark (VmHWM); "
        "peak − loaded = what decoding itself added. The decoded frames "
        "(F·3·H·W float32) are part of it and grow with F by design.",
    }


def _decode_row(
    ws: Workspace,
    peer: str,
    graph_peer: str,
    frames: int,
    chunk: int,
    artifact: Optional[Path],
    needed: List[str],
) -> Dict[str, Any]:
    """One (peer, frames, chunk) case in its own process, or why it is skipped; the peak is
    read over the loaded decoder too, so that decoding's own share shows."""
    row: Dict[str, Any] = {"peer": peer, "frames": frames, "chunk": chunk}
    reason = _skip_reason(ws, graph_peer)
    if reason is None and chunk > frames:
        reason = f"chunk {chunk} > {frames} frames"
    if reason is None and graph_peer in ARTIFACT_FORMAT and artifact is None:
        reason = ws.artifact_error(needed)
    if reason:
        row["skipped"] = reason
        return row
    ws.log(f"memory: {peer}, {frames} frames in chunks of {chunk}")
    spec = dict(
        ws.worker_base(),
        peer=peer,
        frames=frames,
        chunk=chunk,
        artifact_dir=str(artifact) if artifact else None,
    )
    run = ws.run("decode", spec)
    row.update(_process(run), peak_rss_psutil_bytes=run.peak_rss_psutil_bytes)
    if not run.ok:
        row["error"] = run.error()
    else:
        r = run.result
        row.update(
            decode_s=r["decode_s"],
            load_s=r["load_s"],
            rss_after_load_bytes=r["rss_after_load_bytes"],
            output_bytes=r["output_bytes"],
            decode_peak_over_loaded_bytes=run.peak_rss_bytes - r["rss_after_load_bytes"],
        )
    return row


PLAN_BACKENDS = {"svdeploy-onnxruntime": "onnxruntime", "svdeploy-mindspore": "mindspore"}


def _plan_rows(ws: Workspace, peers: List[str], graph_peer: Dict[str, str]) -> List[Dict[str, Any]]:
    """svd-run --plan against the measured peak RSS of each stage of one whole run, one
    child process per backend (svdeploy.benchmarks.memplan)."""
    rows: List[Dict[str, Any]] = []
    for peer in [p for p in peers if p in PLAN_BACKENDS]:
        fmt = ARTIFACT_FORMAT[graph_peer[peer]]
        row: Dict[str, Any] = {"peer": peer, "backend": PLAN_BACKENDS[peer]}
        artifact = ws.artifact([fmt]) if fmt in ws.s.formats else None
        reason = _skip_reason(ws, graph_peer[peer]) or (
            None if artifact is not None else ws.artifact_error([fmt])
        )
        if reason:
            rows.append(dict(row, skipped=reason))
            continue
        ws.log(f"memory: plan against measurement, {row['backend']}")
        run = ws.run(
            "memplan",
            dict(ws.worker_base(), artifact_dir=str(artifact), backend=row["backend"], steps=2),
        )
        row.update(_process(run))
        if not run.ok:
            row["error"] = run.error()
        else:
            r = run.result
            row.update(
                measured_bytes=r["measured_bytes"],
                predicted_bytes=r["predicted_bytes"],
                measured_peak_bytes=r["measured_peak_bytes"],
                predicted_peak_bytes=r["predicted_peak_bytes"],
                plan_error=r["error"],
            )
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------
def suite_train(ws: Workspace) -> Dict[str, Any]:
    s = ws.s
    peers = ["svdeploy"] + (["diffusers"] if "diffusers" in s.peers else [])
    rows: List[Dict[str, Any]] = []
    for peer in peers:
        rows.append(_train_row(ws, peer))
    medians = {r["peer"]: r["step_median_s"] for r in rows if "step_median_s" in r}
    if "diffusers" in medians:
        for r in rows:
            if "step_median_s" in r:
                r["speedup_vs_diffusers"] = medians["diffusers"] / r["step_median_s"]
    return {
        "rows": rows,
        "method": "one child process per peer: one EDM training step = forward of the "
        "U-Net on one video of F frames, backward, global-norm clipping at 1.0, "
        "AdamW; the first step is timed alone (MindSpore compiles its graphs "
        "then: compile ≈ first − median), then timed steps; batch 1, "
        + ("temporal layers only (SVD's recipe)" if s.temporal_only else "all U-Net parameters"),
    }


def _train_row(ws: Workspace, peer: str) -> Dict[str, Any]:
    """One peer's training steps in its own process, or why it is skipped; the first step is
    kept apart from the median, as MindSpore compiles its graphs in it."""
    s = ws.s
    row: Dict[str, Any] = {
        "peer": peer,
        "frames": s.frames,
        "height": s.height,
        "width": s.width,
        "temporal_only": s.temporal_only,
        "precision": s.dtype if peer == "svdeploy" else "fp32",
    }
    if peer == "diffusers" and not ws.has_diffusers:
        row["skipped"] = f"torch/diffusers unavailable: {ws.weights.diffusers_unavailable}"
        return row
    ws.log(f"train: {peer}, {s.repeats} steps")
    spec = dict(
        ws.worker_base(),
        peer=peer,
        repeats=s.repeats,
        warmup=s.warmup,
        budget_s=s.case_budget_s,
        temporal_only=s.temporal_only,
    )
    run = ws.run("train", spec)
    row.update(_process(run))
    if not run.ok:
        row["error"] = run.error()
    else:
        r = run.result
        row.update(
            stats=r["stats"],
            step_median_s=r["stats"]["median_s"],
            step_p10_s=r["stats"]["p10_s"],
            step_p90_s=r["stats"]["p90_s"],
            n=r["stats"]["n"],
            first_step_s=r["first_step_s"],
            compile_s=r["compile_s"],
            build_s=r["build_s"],
            setup=r["setup"],
            first_loss=r["first_loss"],
            last_loss=r["last_loss"],
        )
        if r["stats"].get("cpu_per_wall") is not None:
            row["cpu_per_wall"] = round(r["stats"]["cpu_per_wall"], 2)
    return row


def run_suite(name: str, ws: Workspace, peak: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    load_before = load_average()
    if name == "export":
        result = suite_export(ws)
    elif name == "graphs":
        result = suite_graphs(ws, peak or {})
    elif name == "e2e":
        result = suite_e2e(ws)
    elif name == "memory":
        result = suite_memory(ws)
    elif name == "train":
        result = suite_train(ws)
    elif name == "serve":
        from .serve_load import suite_serve

        result = suite_serve(ws)
    else:  # pragma: no cover - the CLI checks the names
        raise ValueError(name)
    result["load_average_before"] = load_before
    result["load_average_after"] = load_average()
    return result


__all__ = [
    "run_suite",
    "suite_export",
    "suite_graphs",
    "suite_e2e",
    "suite_memory",
    "suite_train",
    "E2E_PEERS",
    "MEMORY_PEERS",
]
