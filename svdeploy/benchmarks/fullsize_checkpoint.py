"""Full-size conversion benchmark: write a random-weight Stability single file, then time and
measure ``svd-convert`` on it.

    python -m svdeploy.benchmarks.fullsize_checkpoint --variant svd_xt \
        --out /data/svd_xt_random.safetensors

The file has every tensor of the four networks at full size (from the analytic key table, so it
is exactly what ``svd-convert`` expects), plus a few tensors it must ignore (a text-tower piece,
an EMA entry), in float32 (like Stability's release, about 9 GB) or float16. It is written tensor
by tensor. The conversion runs in a child process (``python -m svdeploy.models.cli``) so its peak
resident memory can be measured: ``/usr/bin/time -v`` when present, and psutil polling of the
child as a cross-check. Random weights: this measures I/O and memory, not model quality.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from svdeploy.benchmarks.processes import tree_rss
from svdeploy.config import PRESETS, load_model_config
from svdeploy.models.keys import count_parameters, numel, sgm_parameter_shapes
from svdeploy.models.weights_io import SafetensorsWriter

# Ignored by svd-convert; present in real Stability files (the text tower is partly kept).
EXTRA_TENSORS: Dict[str, Tuple[int, ...]] = {
    "conditioner.embedders.0.open_clip.model.token_embedding.weight": (49408, 1024),
    "conditioner.embedders.0.open_clip.model.positional_embedding": (77, 1024),
    "conditioner.embedders.0.open_clip.model.ln_final.weight": (1024,),
    "conditioner.embedders.0.open_clip.model.ln_final.bias": (1024,),
    "conditioner.embedders.0.open_clip.model.text_projection": (1024, 1024),
    "conditioner.embedders.0.open_clip.model.logit_scale": (),
    "model_ema.num_updates": (),
}


def write_random_checkpoint(
    variant: str, path: Path, dtype: str = "float32", seed: int = 0, progress: bool = True
) -> Dict[str, float]:
    """Stream a full-size random sgm safetensors file; returns its size and the seconds taken."""
    from tqdm import tqdm

    cfg = load_model_config(variant)
    shapes = dict(sgm_parameter_shapes(cfg))
    shapes.update(EXTRA_TENSORS)
    code = {"float32": "F32", "float16": "F16"}[dtype]
    names = sorted(shapes)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    total = sum(numel(s) for s in shapes.values()) * (4 if dtype == "float32" else 2)
    with tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc="write",
        file=sys.stderr,
        disable=not progress,
    ) as bar:
        with SafetensorsWriter(
            path,
            [(n, shapes[n], code) for n in names],
            metadata={"format": "pt", "note": "random weights (svdeploy benchmark)"},
        ) as writer:
            for name in names:
                values = rng.standard_normal(shapes[name], dtype=np.float32)
                values *= 0.02
                writer.write(name, values.astype(np.float16) if dtype == "float16" else values)
                bar.update(values.size * (4 if dtype == "float32" else 2))
    return {
        "file_bytes": float(path.stat().st_size),
        "write_seconds": time.perf_counter() - started,
        "tensors": float(len(names)),
        "parameters": float(count_parameters(shapes)),
    }


def _poll_peak_rss(pid: int, stop: threading.Event, result: List[int]) -> None:
    import psutil

    try:
        process = psutil.Process(pid)
        while not stop.is_set():
            result[0] = max(result[0], tree_rss(process))
            time.sleep(0.02)
    except psutil.Error:
        pass  # the process ended


def measure_conversion(src: Path, out_dir: Path, variant: str) -> Dict[str, object]:
    """Run svd-convert in a child process; its seconds and peak RSS (time -v and psutil)."""
    command = [
        sys.executable,
        "-m",
        "svdeploy.models.cli",
        str(src),
        "--out",
        str(out_dir),
        "--config",
        variant,
        "--quiet",
        "--overwrite",
    ]
    time_binary = shutil.which("time") or (
        "/usr/bin/time" if os.path.exists("/usr/bin/time") else None
    )
    if time_binary:
        command = [time_binary, "-v"] + command
    peak = [0]
    stop = threading.Event()
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    poller = threading.Thread(target=_poll_peak_rss, args=(process.pid, stop, peak), daemon=True)
    poller.start()
    stdout, stderr = process.communicate()
    seconds = time.perf_counter() - started
    stop.set()
    poller.join()
    if process.returncode != 0:
        raise RuntimeError(f"svd-convert failed ({process.returncode}): {stderr[-2000:]}")
    max_rss_kb: Optional[int] = None
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    if match:
        max_rss_kb = int(match.group(1))
    return {
        "seconds": seconds,
        "peak_rss_bytes_time_v": None if max_rss_kb is None else max_rss_kb * 1024,
        "peak_rss_bytes_psutil": peak[0],
        "output_bytes": (out_dir / "weights.safetensors").stat().st_size,
    }


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--variant",
        default="svd_xt",
        choices=PRESETS,
        help="model preset whose full-size tensors are written (default svd_xt)",
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help="path of the random-weight .safetensors file to write (about 9 GB in float32)",
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "float16"),
        help="storage dtype of the random file (Stability's release is float32)",
    )
    parser.add_argument(
        "--convert-dir",
        type=Path,
        default=None,
        help="where svd-convert writes (default: a temporary directory next to --out, "
        "deleted afterwards)",
    )
    parser.add_argument(
        "--reuse", action="store_true", help="reuse an existing --out file instead of writing it"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the random file and the converted directory"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    report: Dict[str, object] = {"variant": args.variant, "dtype": args.dtype}
    if not (args.reuse and args.out.is_file()):
        report["write"] = write_random_checkpoint(
            args.variant, args.out, args.dtype, progress=not args.quiet
        )
    report["file_bytes"] = args.out.stat().st_size
    convert_dir = args.convert_dir or Path(
        tempfile.mkdtemp(prefix=".svd-convert-bench.", dir=args.out.parent)
    )
    try:
        report["convert"] = measure_conversion(args.out, convert_dir, args.variant)
    finally:
        if not args.keep:
            shutil.rmtree(convert_dir, ignore_errors=True)
            args.out.unlink(missing_ok=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
