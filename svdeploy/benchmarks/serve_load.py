"""The ``serve`` suite: ``svd-serve`` under load. The real command on 127.0.0.1 over the run's
ONNX export; N clients, each submitting a job, polling it and fetching its video, again and
again, for a fixed time. Figures: finished videos per second, latency percentiles (submit →
video received), the replicas' RSS; every accepted job is accounted for (nothing lost)."""

from __future__ import annotations

import hashlib
import io
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from .common import demo_image
from .harness import Workspace

RAY_DAEMONS = ("gcs_server", "raylet")


def replica_rss(tree: List[int]) -> Dict[str, int]:
    """RSS (bytes) of each Ray process of the server, by its title (ray::ServeReplica:...) or
    daemon name (gcs_server, raylet)."""
    found: Dict[str, int] = {}
    for pid in tree:
        try:
            title = (
                Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            )
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        name = Path(title.split()[0]).name if title.strip() else ""
        if not (name.startswith("ray::") or name in RAY_DAEMONS):
            continue
        rss = next(
            int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")
        )
        found[f"{name} ({pid})"] = rss
    return found


def _client(
    url: str, image: bytes, deadline: float, steps: int, seed: int, out: List[Dict[str, Any]]
) -> None:
    from svdeploy.serve.client import ServeClient

    client = ServeClient(url, timeout=600)
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        reply = client.submit(image, seed=seed, steps=steps, format="mp4")
        if reply.status == 429:
            out.append({"status": 429})
            time.sleep(float(reply.headers.get("retry-after", "1")))
            continue
        if reply.status != 202:
            out.append({"status": reply.status, "error": reply.body[:300].decode(errors="replace")})
            continue
        job = reply.json()["id"]
        record = client.wait(job, timeout=3600, poll=0.05)
        entry = {"status": record["status"], "id": job, "submitted": t0}
        if record["status"] == "succeeded":
            body = client.content(job).body
            entry.update(
                latency_s=time.monotonic() - t0,
                run_s=record["timings"].get("run_s"),
                queued_s=record["timings"].get("queued_s"),
                intact=hashlib.sha256(body).hexdigest() == record["sha256"],
            )
        out.append(entry)
        seed += 1


def suite_serve(ws: Workspace) -> Dict[str, Any]:
    s = ws.s
    artifact = ws.artifact(["onnx"])
    if artifact is None:
        return {"rows": [], "error": ws.artifact_error(["onnx"])}
    buffer = io.BytesIO()
    from PIL import Image

    Image.fromarray(demo_image(s.height, s.width)).save(buffer, format="PNG")
    image = buffer.getvalue()
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix=".serve-bench-", dir=s.work))
    try:
        for clients in s.serve_clients:
            rows.append(_serve_with_clients(ws, artifact, image, clients, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "rows": rows,
        "steps": s.steps,
        "seconds": s.serve_seconds,
        "method": f"svd-serve on 127.0.0.1 with {s.serve_replicas} Generator replica(s) over "
        f"the ONNX export (backend chosen as svd-run does: openvino where installed, "
        "else onnxruntime); each client submits a {s.steps}-step mp4 job, polls it "
        "every 50 ms and downloads the video, until the time is up (the jobs "
        "running then are waited for); latency = submit → video received; "
        "lost = accepted jobs that did not succeed or whose download did not match "
        "the record's sha256",
    }


def _serve_with_clients(
    ws: Workspace, artifact: Path, image: bytes, clients: int, tmp: Path
) -> Dict[str, Any]:
    """One load level, on a fresh server so that no job of the level before is queued; its
    queue (twice the clients, at least 16) holds every client's job."""
    from svdeploy.serve.launch import ServeProcess

    s = ws.s
    ws.log(f"serve: {clients} client(s) for {s.serve_seconds:g} s, {s.serve_replicas} replica(s)")
    args = [
        "--replicas",
        str(s.serve_replicas),
        "--max-queue",
        str(max(16, 2 * clients)),
        "--no-verify",
        "--replica-cpus",
        str(min(1.0, s.threads / s.serve_replicas)),
    ]
    with ServeProcess(
        artifact, tmp / f"jobs-{clients}", args, log_path=tmp / f"serve-{clients}.log"
    ) as server:
        results: List[List[Dict[str, Any]]] = [[] for _ in range(clients)]
        start = time.monotonic()
        deadline = start + s.serve_seconds
        threads = [
            threading.Thread(
                target=_client, args=(server.url, image, deadline, s.steps, 1000 * i, results[i])
            )
            for i in range(clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
        rss = replica_rss(server.tree())
    return _row(clients, s.serve_replicas, elapsed, [e for r in results for e in r], rss)


def _row(
    clients: int, replicas: int, elapsed: float, entries: List[Dict[str, Any]], rss: Dict[str, int]
) -> Dict[str, Any]:
    done = [e for e in entries if e["status"] == "succeeded" and e.get("intact")]
    accepted = [e for e in entries if "id" in e]
    latency = np.array([e["latency_s"] for e in done]) if done else np.array([])

    def pct(q: float):
        return float(np.percentile(latency, q)) if latency.size else None

    generators = [v for k, v in rss.items() if "Generator" in k]
    return {
        "clients": clients,
        "replicas": replicas,
        "elapsed_s": elapsed,
        "accepted": len(accepted),
        "succeeded": len(done),
        "lost": len(accepted) - len(done),
        "rejected_429": sum(e["status"] == 429 for e in entries),
        "other_errors": [e for e in entries if "id" not in e and e["status"] != 429][:5],
        "videos_per_s": len(done) / elapsed if elapsed else None,
        "latency_p50_s": pct(50),
        "latency_p90_s": pct(90),
        "latency_p99_s": pct(99),
        "run_median_s": float(np.median([e["run_s"] for e in done])) if done else None,
        "replica_rss_bytes": max(generators) if generators else None,
        "process_rss": rss,
    }
