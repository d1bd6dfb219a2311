"""``make demo-model`` (``python -m svdeploy.demo_model``): rebuild the shipped demo model
from nothing, deterministically for its seed.

1. render the moving-shapes data set (``svd-data synth-shapes WORK/data --clips 1200 --frames 8
   --seed 0``: mp4 clips, labels from svd-data motion-buckets, the ground truth);
2. train with svd-train and the recipe ``configs/demo_train.yaml`` on the ``demo`` preset: the
   autoencoder stage, then the whole U-Net from random initialisation (MindSpore only), printing
   each stage's loss curve; an interrupted run resumes from its newest checkpoint;
3. write the checkpoint with float16 storage (loading upcasts to float32) and ``MODEL.md`` into
   ``--out`` (default: the package's ``assets/demo``), atomically.

``svd-bench quality`` measures the result; ``--evaluate`` runs it here (on the float16 weights
as shipped, exported to ONNX and MindIR) and puts the figures into MODEL.md. The recipe itself is
training code (svd-data, svd-train); this module sits above train, export and runtime, like
``svdeploy.demo``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

PRESET = "demo"
CLIPS = 1200
DATA_SEED = 0
FRAMES = 8


def recipe_path() -> Path:
    return Path(str(resources.files("svdeploy").joinpath("configs/demo_train.yaml")))


def packaged_dir() -> Path:
    return Path(str(resources.files("svdeploy").joinpath("assets/demo")))


def build_data(data: Path, clips: int, seed: int, progress: bool) -> Path:
    """WORK/data as synth-shapes renders it; a complete earlier rendering of the same size and
    seed is reused (rendering is deterministic, so it would be the same files)."""
    from svdeploy.train.shapes import synthesize

    stamp = data / "synth-shapes.txt"
    wanted = f"clips {clips} frames {FRAMES} seed {seed}\n"
    if stamp.is_file() and stamp.read_text(encoding="utf-8") == wanted:
        print(f"[1/3] data: reusing {data} ({wanted.strip()})")
        return data
    if data.exists():
        import shutil

        shutil.rmtree(data)
    started = time.perf_counter()
    synthesize(data, clips, FRAMES, seed, progress=progress)
    stamp.write_text(wanted, encoding="utf-8")
    print(
        f"[1/3] data: {clips} clips of {FRAMES} frames (seed {seed}) in "
        f"{time.perf_counter() - started:.0f} s → {data}"
    )
    return data


def train(work: Path, data: Path, overrides: Sequence[str], progress: bool) -> Any:
    """Run the recipe into WORK/run (resuming a run there); returns the TrainResult."""
    from svdeploy.config import load_model_config
    from svdeploy.train.config import load_training_config, parse_override_args
    from svdeploy.train.trainer import Trainer, setup_environment

    paths = [
        "--train.output_dir",
        str(work / "run"),
        "--train.dataset.init_args.data_dir",
        str(data),
        "--train.dataset.init_args.metadata",
        str(data / "labels.csv"),
    ]
    model_cfg = load_model_config(PRESET)
    cfg = load_training_config(
        recipe_path(), parse_override_args(paths + list(overrides)), model_cfg
    )
    setup_environment(cfg, model_cfg)
    trainer = Trainer(cfg, model_cfg, resume=True, progress=progress)
    return trainer.train()


def loss_curve(
    values: Sequence[float], width: int = 64, height: int = 10, log_scale: bool = True
) -> str:
    """A text chart of a loss series: ``width`` buckets of the mean (log10 when asked)."""
    if not values:
        return "(no steps)"
    v = np.asarray(values, np.float64)
    edges = np.linspace(0, len(v), min(width, len(v)) + 1).astype(int)
    means = np.array([v[a:b].mean() for a, b in zip(edges[:-1], edges[1:])])
    y = np.log10(np.maximum(means, 1e-12)) if log_scale else means
    lo, hi = float(y.min()), float(y.max())
    rows = np.round((y - lo) / max(hi - lo, 1e-12) * (height - 1)).astype(int)
    lines = []
    for level in range(height - 1, -1, -1):
        value = (
            10 ** (lo + (hi - lo) * level / max(height - 1, 1))
            if log_scale
            else lo + (hi - lo) * level / max(height - 1, 1)
        )
        lines.append(f"{value:9.4f} |" + "".join("*" if r == level else " " for r in rows))
    lines.append(" " * 10 + "+" + "-" * len(rows))
    lines.append(" " * 11 + f"step 1{' ' * max(len(rows) - 12, 1)}{len(v)}")
    return "\n".join(lines)


def read_column(
    path: Path, column: str, where: Optional[Callable[[Dict[str, str]], bool]] = None
) -> List[float]:
    """``column`` of a CSV log as floats, of the rows ``where`` accepts (all by default)."""
    if not path.is_file():
        return []
    with open(path, "r", encoding="utf-8", newline="") as fh:
        return [float(row[column]) for row in csv.DictReader(fh) if where is None or where(row)]


def stage_losses(run: Path) -> Dict[str, List[float]]:
    """Each stage's loss per step: the autoencoder's joint and decoder-only phases, the U-Net."""
    from svdeploy.train.autoencoder import DECODER_ONLY, JOINT, STAGE_DIR
    from svdeploy.train.autoencoder import LOG_FILE as AE_LOG
    from svdeploy.train.trainer import LOG_FILE

    def phase(name: str) -> List[float]:  # logs from before the phase column are all joint
        return read_column(
            run / STAGE_DIR / AE_LOG, "loss", lambda r: r.get("phase", JOINT) == name
        )

    losses = {
        "autoencoder": phase(JOINT),
        "autoencoder (decoder)": phase(DECODER_ONLY),
        "unet": read_column(run / LOG_FILE, "loss"),
    }
    return {stage: values for stage, values in losses.items() if values or stage == "unet"}


def tail_mean(values: Sequence[float], n: int = 50) -> float:
    return float(np.mean(values[-n:])) if values else float("nan")


WORLD_FILE = "world.json"  # the motion buckets the demo and the tests generate at
MODEL_CARD = "MODEL.md"


def write_float16(weights: Path, target: Path) -> int:
    """Every tensor of ``weights`` stored as float16 (loading upcasts); refuses a value that
    float16 cannot hold. Returns the file size."""
    from svdeploy.errors import CheckpointError
    from svdeploy.models.weights_io import SafetensorsFile, SafetensorsWriter

    with SafetensorsFile(weights) as src:
        names = sorted(src.infos)
        entries = [(n, src.infos[n].shape, "F16") for n in names]
        with SafetensorsWriter(
            target, entries, metadata={"format": "pt", "producer": "svdeploy demo_model"}
        ) as w:
            for name in names:
                value = src.read_float32(name)
                if np.abs(value).max(initial=0.0) > np.finfo(np.float16).max:
                    raise CheckpointError(
                        f"{name}: a weight of magnitude {np.abs(value).max():.3g} "
                        "does not fit float16 (at most 65504)"
                    )
                w.write(name, value.astype(np.float16))
    return target.stat().st_size


def evaluate_checkpoint(checkpoint: Path, work: Path, images: int = 16) -> List[Dict[str, Any]]:
    """svd-bench quality on ``checkpoint``: export (ONNX + MindIR, validated) and score."""
    from svdeploy.benchmarks.quality import run_quality
    from svdeploy.export import export_artifact

    artifact = work / "artifact"
    export_artifact(
        checkpoint, artifact, formats=["mindir", "onnx"], overwrite=True, progress=False
    )
    return run_quality(artifact, ("onnxruntime", "mindspore"), images, work / "quality", log=print)


def package(
    checkpoint: Path,
    out: Path,
    work: Path,
    losses: Dict[str, List[float]],
    seconds: float,
    evaluate: bool = False,
) -> Path:
    """Write the shipped model into ``out`` in one step: config.yaml, float16 weights,
    world.json (the slow and fast motion buckets) and MODEL.md."""
    import tempfile

    from svdeploy.benchmarks.quality import eval_clips, world_buckets
    from svdeploy.config import save_model_config
    from svdeploy.fsutil import (
        apply_umask,
        atomic_write_json,
        make_temp_dir,
        remove_quietly,
        replace_dir,
    )
    from svdeploy.models.loading import CONFIG_FILE, WEIGHTS_FILE, read_checkpoint_dir

    cfg, weights = read_checkpoint_dir(checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out, "partial")
    try:
        save_model_config(cfg, tmp / CONFIG_FILE)
        size = write_float16(weights, tmp / WEIGHTS_FILE)
        with tempfile.TemporaryDirectory(prefix="svd-buckets-") as probe:
            buckets = world_buckets(eval_clips(16, cfg.num_frames), Path(probe))
        atomic_write_json(
            tmp / WORLD_FILE,
            {"buckets": buckets, "speeds_px_per_frame": {"slow": 1.0, "fast": 2.5}},
        )
        figures = evaluate_checkpoint(tmp, work / "evaluation") if evaluate else None
        (tmp / MODEL_CARD).write_text(
            model_card(checkpoint, losses, seconds, size, buckets, figures), encoding="utf-8"
        )
        apply_umask(tmp)
        replace_dir(tmp, out)
    except BaseException:
        remove_quietly(tmp)
        raise
    return out


def model_card(
    checkpoint: Path,
    losses: Dict[str, List[float]],
    seconds: float,
    size: int,
    buckets: Dict[str, int],
    figures: Optional[List[Dict[str, Any]]],
) -> str:
    from svdeploy.benchmarks.quality import markdown

    ae, unet = losses.get("autoencoder", []), losses["unet"]
    decoder = losses.get("autoencoder (decoder)", [])
    decoder_row = (
        f"| autoencoder, decoder alone (encoder frozen) | {len(decoder)} "
        f"| {tail_mean(decoder):.4g} |\n"
        if decoder
        else ""
    )
    evaluation = (
        markdown(figures)
        if figures
        else "Not measured in this build; run `svd-bench quality` (see README).\n"
    )
    return f"""# The svdeploy demo model

SVD's architecture (sgm VideoUNet, temporal VAE decoder, CLIP-style image encoder) at the `demo`
preset's size: 8 frames of 64×64, 16×16×4 latents, trained from scratch by `svd-train` on the
moving-shapes world. It is here so that `make demo` shows a generated video that moves, not to
generate anything else.

## The world
Frames 64×64 RGB; a uniform gray background (level 0.10–0.40); one filled disc or square
(radius / half-side 5–8 px, 4×4-supersampled antialiasing) whose colour sets its direction: red
→ right, blue → left, green → down, yellow → up; constant speed 0.5–3.0 px per frame, the object
inside the frame throughout; 7 fps. Training clips: `svd-data synth-shapes` (seed {DATA_SEED},
{CLIPS} clips), labelled by `svd-data motion-buckets` with its defaults. The CLIP image encoder
stays at its seeded random initialisation.

## Recipe
`make demo-model` (= `python -m svdeploy.demo_model`): data, then `svd-train --config
svdeploy/configs/demo_train.yaml --svd-config demo` (autoencoder stage, then every U-Net
parameter with SVD's EDM objective), then this folder. Deterministic for its seed.

| stage | steps | loss, mean of the last 50 steps |
|---|---|---|
| autoencoder (object-weighted MSE + 1e-4·KL) | {len(ae)} | {tail_mean(ae):.4g} |
{decoder_row}| U-Net (EDM, weighted MSE) | {len(unet)} | {tail_mean(unet):.4g} |

Built in {seconds / 60:.0f} min on this machine (2-core CPU); weights stored as float16
({size / 2**20:.1f} MB; loading upcasts to float32); source checkpoint `{checkpoint.name}`.

## Motion buckets
svd-data gives clips moving at 1 px/frame bucket **{buckets["slow"]}** and at 2.5 px/frame
bucket **{buckets["fast"]}** (median over 16 fresh clips); `world.json` holds them, `make demo`
generates at both.

## Evaluation (`svd-bench quality`, 16 fresh images, seed 1000)
{evaluation}"""


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("-") and not o.startswith("--")]
    if bad or args.clips < 1:
        parser.error(
            f"unexpected {' '.join(bad) or f'--clips {args.clips}'}: training-config "
            "overrides are --section.key VALUE; --clips must be ≥ 1"
        )
    from svdeploy.errors import SvdeployError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)
    started = time.perf_counter()
    try:
        out = _build(args, overrides, started)
    except SvdeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"[3/3] demo model → {out} ({time.perf_counter() - started:.0f} s in all)")
    return 0


def _parser() -> argparse.ArgumentParser:
    """The options; anything else on the command line is a training-config override."""
    parser = argparse.ArgumentParser(
        prog="python -m svdeploy.demo_model",
        description="Rebuild the demo model from scratch: render the moving-shapes data, train "
        "it with svd-train (configs/demo_train.yaml on the demo preset), write the "
        "float16 checkpoint and MODEL.md to --out. Deterministic for the seed; an "
        "interrupted run resumes.",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("build/demo-model"),
        help="data, training run and checkpoints (default: build/demo-model)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where the model goes (default: the package's assets/demo)",
    )
    parser.add_argument(
        "--clips", type=int, default=CLIPS, help=f"clips to render (default {CLIPS})"
    )
    parser.add_argument("--seed", type=int, default=DATA_SEED, help="seed of the data (default 0)")
    parser.add_argument(
        "--evaluate",
        action="store_true",
        help="export the result and run svd-bench quality's evaluation (ONNX "
        "Runtime and MindSpore, 16 images) into MODEL.md",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _build(args: argparse.Namespace, overrides: List[str], started: float) -> Path:
    """Data, training and packaging; the loss curves are printed between, as training is the
    long step and its curves are what one checks first."""
    progress = not args.no_progress
    data = build_data(args.work / "data", args.clips, args.seed, progress)
    result = train(args.work, data, overrides, progress)
    losses = stage_losses(args.work / "run")
    for stage, values in losses.items():
        print(f"[2/3] {stage} loss ({len(values)} steps, last-50 mean {tail_mean(values):.4g}):")
        print(loss_curve(values))
    return package(
        result.last_checkpoint,
        args.out or packaged_dir(),
        args.work,
        losses,
        time.perf_counter() - started,
        evaluate=args.evaluate,
    )


if __name__ == "__main__":
    sys.exit(main())
