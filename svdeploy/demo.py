"""The built-in demo (``make demo``): the whole product on the tiny preset, end to end.

1. write a Stability-layout checkpoint of the tiny model with seeded random weights,
2. convert it (svd-convert),
3. export the four networks to MindIR and ONNX with validation (svd-export),
4. generate a video from the repository's sample image (svd-run) as mp4 and gif.

Random weights produce noise, not a meaningful video: the demo shows that every step runs and
where its outputs go. For real weights, see the commands printed at the end (README.md too).
"""
from __future__ import annotations

import argparse
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import List, Optional

REAL_WEIGHTS_COMMANDS = """\
  svd-convert svd_xt.safetensors --out checkpoints/svd_xt --config svd_xt
  svd-export --checkpoint checkpoints/svd_xt --out artifacts/svd_xt --format both --decode-chunk-size 5
  svd-run artifacts/svd_xt --image your_image.png --out video.mp4 --seed 42"""


def sample_image_path() -> Path:
    return Path(str(resources.files("svdeploy").joinpath("assets/sample.png")))


def run_demo(out_dir: Path, formats: List[str], steps: int, seed: int) -> None:
    from svdeploy.cliutil import setup_mindspore
    from svdeploy.config import load_model_config
    from svdeploy.export import export_artifact
    from svdeploy.models.convert import convert_checkpoint
    from svdeploy.models.random_weights import write_random_sgm_file
    from svdeploy.runtime.run import run_to_file

    setup_mindspore("graph")
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / "demo_work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    started = time.perf_counter()

    cfg = load_model_config("tiny")
    source = work / "tiny_random.safetensors"
    write_random_sgm_file(cfg, source, seed=seed)
    print(f"[1/4] wrote a tiny SVD checkpoint with seeded random weights (seed {seed}): {source}")

    checkpoint = work / "checkpoint"
    report = convert_checkpoint(source, checkpoint, config="tiny", progress=False)
    print(f"[2/4] converted it with svd-convert: {report.total_tensors} tensors, "
          f"{report.total_parameters:,} parameters → {checkpoint}")

    artifact = work / "artifact"
    result = export_artifact(checkpoint, artifact, formats=formats, progress=True)
    print(f"[3/4] exported {len(result.reports)} graphs ({', '.join(formats)}) in "
          f"{result.seconds:.0f} s, each checked against the network:")
    print("      " + result.table().replace("\n", "\n      "))

    image = sample_image_path()
    outputs = []
    for name in ("demo.mp4", "demo.gif"):
        # the demo owns OUT/demo.*: a second `make demo` replaces them
        record = run_to_file(artifact, image, out_dir / name, seed=seed,
                             num_inference_steps=steps, progress=True, overwrite=True)
        outputs.append((out_dir / name, record))
    backend = outputs[0][1].get("backend", "?")
    print(f"[4/4] generated {cfg.num_frames} frames at {cfg.width}×{cfg.height} from {image.name} "
          f"with the {backend} backend, {steps} steps:")
    for path, _ in outputs:
        print(f"      {path}  (+ {path.name}.json with every parameter and timing)")
    print(f"done in {time.perf_counter() - started:.0f} s. The tiny model has random weights, so the "
          "video is noise; it shows that every step runs.\nWith Stability's real SVD-XT weights:\n"
          + REAL_WEIGHTS_COMMANDS)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m svdeploy.demo",
        description="Tiny end-to-end demo: random-weight checkpoint → svd-convert → svd-export → "
                    "svd-run, writing OUT/demo.mp4 and OUT/demo.gif.")
    parser.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    parser.add_argument("--format", choices=["both", "mindir", "onnx"], default="both",
                        help="graph formats to export (default: both)")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps (default: 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and noise (default: 0)")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps {args.steps}: expected an integer ≥ 1")
    formats = ["mindir", "onnx"] if args.format == "both" else [args.format]
    from svdeploy.errors import SvdeployError

    try:
        run_demo(Path(args.out), formats, args.steps, args.seed)
    except SvdeployError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
