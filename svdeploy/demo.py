"""The built-in demo (``make demo``): the shipped demo model, from checkpoint to video.

1. export the demo checkpoint (``svdeploy/assets/demo``, trained from scratch by ``make
   demo-model`` on the moving-shapes world) to MindIR and ONNX, each graph validated against the
   network (svd-export);
2. generate from ``svdeploy/assets/sample.png`` (a red disc: red moves right) at the slow and the
   fast motion bucket (the buckets svd-data gives 1 and 2.5 px/frame clips) with the runtime;
3. write OUT/demo.mp4 and OUT/demo.gif (the two videos side by side, slow left) and
   OUT/demo_sheet.png (the input, then every frame; one row per bucket), and print how far and
   which way the object moved in each.
"""

from __future__ import annotations

import argparse
import json
import time
from importlib import resources
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

REAL_WEIGHTS_COMMANDS = """\
  svd-convert svd_xt.safetensors --out checkpoints/svd_xt --config svd_xt
  svd-export --checkpoint checkpoints/svd_xt --out artifacts/svd_xt --format both \\
      --decode-chunk-size 5
  svd-run artifacts/svd_xt --image your_image.png --out video.mp4 --seed 42"""
SCALE = 3  # the 64×64 frames are shown 3× larger (nearest neighbour: the pixels stay visible)
GAP = 4  # pixels between the tiles of the sheet


def sample_image_path() -> Path:
    return Path(str(resources.files("svdeploy").joinpath("assets/sample.png")))


def demo_buckets(checkpoint: Path) -> Dict[str, int]:
    """The slow and fast motion buckets recorded with the demo model (world.json)."""
    from svdeploy.demo_model import WORLD_FILE
    from svdeploy.errors import CheckpointError

    path = checkpoint / WORLD_FILE
    try:
        buckets = json.loads(path.read_text(encoding="utf-8"))["buckets"]
        return {"slow": int(buckets["slow"]), "fast": int(buckets["fast"])}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{path}: cannot read the demo's motion buckets ({exc}); rebuild "
            "the demo model with `make demo-model`"
        ) from None


def upscale(frames: np.ndarray, factor: int = SCALE) -> np.ndarray:
    """(..., H, W, C) → (..., H·factor, W·factor, C), nearest neighbour."""
    return frames.repeat(factor, axis=-3).repeat(factor, axis=-2)


def sheet(image: np.ndarray, rows: Dict[str, np.ndarray]) -> np.ndarray:
    """uint8 contact sheet: per row the input, a wider gap, then every frame."""
    tile = upscale(image[None])[0]
    h, w = tile.shape[:2]
    frames = max(len(v) for v in rows.values())
    width = (frames + 1) * (w + GAP) + GAP * 2
    out = np.full((len(rows) * (h + GAP) + GAP, width, 3), 255, np.uint8)
    for r, video in enumerate(rows.values()):
        y = GAP + r * (h + GAP)
        out[y : y + h, GAP : GAP + w] = tile
        for i, frame in enumerate(upscale(video)):
            x = GAP * 3 + (i + 1) * (w + GAP)
            out[y : y + h, x : x + w] = frame
    return out


def side_by_side(videos: List[np.ndarray]) -> np.ndarray:
    """(F, H, W, 3) uint8 videos → one (F, H, W·n + gaps, 3) video."""
    parts = []
    for i, video in enumerate(upscale(np.stack(videos))):
        if i:
            parts.append(np.full(video.shape[:2] + (GAP, 3), 255, np.uint8))
        parts.append(video)
    return np.concatenate(parts, axis=2)


def run_demo(out_dir: Path, formats: List[str], steps: Optional[int], seed: int) -> None:
    from PIL import Image

    from svdeploy.cliutil import setup_mindspore
    from svdeploy.export import export_artifact
    from svdeploy.fsutil import atomic_write_with
    from svdeploy.models.loading import resolve_checkpoint_dir
    from svdeploy.runtime.pipeline import VideoPipeline
    from svdeploy.runtime.video import frames_to_uint8, save_frames
    from svdeploy.train.shapes import track_object

    setup_mindspore("graph")
    started = time.perf_counter()
    checkpoint = resolve_checkpoint_dir("demo")
    buckets = demo_buckets(checkpoint)
    artifact = out_dir / "demo_work" / "artifact"
    result = export_artifact(checkpoint, artifact, formats=formats, overwrite=True, progress=True)
    print(
        f"[1/3] exported the demo model ({checkpoint}) to {', '.join(formats)} in "
        f"{result.seconds:.0f} s, each graph checked against the network:"
    )
    print("      " + result.table().replace("\n", "\n      "))

    pipe = VideoPipeline.load(artifact)
    image_path = sample_image_path()
    image = np.asarray(Image.open(image_path).convert("RGB"), np.float32) / 255.0
    videos: Dict[str, np.ndarray] = {}
    for name, bucket in buckets.items():
        generated = pipe.generate(
            image, motion_bucket_id=bucket, seed=seed, num_inference_steps=steps, progress=False
        )
        videos[f"{name} (bucket {bucket})"] = frames_to_uint8(generated.frames)
        v = track_object(generated.frames).velocity()
        print(
            f"[2/3] {name} bucket {bucket}: the object moved ({v[0]:+.2f}, {v[1]:+.2f}) px/frame "
            f"(x right, y down) with the {pipe.backend} backend, "
            f"{generated.params.num_inference_steps} steps"
        )
    fps = generated.params.fps
    both = side_by_side(list(videos.values()))
    written = [save_frames(both, out_dir / name, fps) for name in ("demo.mp4", "demo.gif")]
    contact = sheet(frames_to_uint8(image[None])[0], videos)
    written.append(
        atomic_write_with(
            out_dir / "demo_sheet.png",
            lambda p: Image.fromarray(contact).save(p, format="PNG"),
            suffix=".png",
        )
    )
    print("[3/3] wrote " + ", ".join(str(p) for p in written) + " (slow bucket left / top)")
    print(
        f"done in {time.perf_counter() - started:.0f} s. With Stability's real SVD-XT weights:\n"
        + REAL_WEIGHTS_COMMANDS
    )


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m svdeploy.demo",
        description="The demo: export the shipped moving-shapes model (svd-export), generate "
        "from the sample image at a slow and a fast motion bucket (svd-run's "
        "pipeline), write OUT/demo.mp4, OUT/demo.gif and OUT/demo_sheet.png.",
    )
    parser.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    parser.add_argument(
        "--format",
        choices=["both", "mindir", "onnx"],
        default="both",
        help="graph formats to export (default: both)",
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="denoising steps (default: the model's, 16)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise (default: 0)")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps {args.steps}: expected an integer ≥ 1")
    formats = ["mindir", "onnx"] if args.format == "both" else [args.format]
    from svdeploy.errors import SvdeployError

    try:
        run_demo(Path(args.out), formats, args.steps, args.seed)
    except SvdeployError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
