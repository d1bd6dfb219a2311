"""The autoencoder stage of svd-train: fit SVD's VAE (image encoder and temporal video decoder)
to the training clips, for a model trained from scratch.

For a batch of B clips of F frames x ∈ [−1, 1]:

    (μ, log σ²) = quant_conv(encoder(x))                       per frame
    z           = μ + σ·ε,  ε ~ N(0, 1)                        (drawn in NumPy, seeded per step)
    x̂           = decoder(z, F)                                 the temporal decoder, per clip
    w           = 1 + object_weight · min(max_c |x − b| / 0.1, 1)   per pixel; b: border median
    loss        = Σ w(x̂ − x)² / Σ w  + kl_weight · mean(½(μ² + σ² − 1 − log σ²))

The weight w is there because plain MSE spends itself on the background: in the moving-shapes
world the object covers 2–5 % of a frame, and a VAE fitted with uniform weights for a few hundred
steps returns a flat background around a faded, shrunken object (its colour, which tells the
direction, is what gets lost). ``object_weight`` 0 is the plain mean squared error.

An optional second phase (``decoder_steps``) trains the decoder alone, the encoder frozen (its
moments pass through stop_gradient; no KL), with its own ``decoder_object_weight``: the object
weight that brings the colour back leaves the background level off by up to 0.2, and the decoder
can fix that without moving the latent space. The U-Net stage reads only the encoder, so this
phase changes nothing the U-Net learns.

Afterwards ``vae.scale_factor`` = 1 / std(μ) over ``scale_samples`` clips, so the U-Net sees
latents of unit variance (the role 0.18215 plays for Stable Diffusion's VAE), and the stage
writes a complete checkpoint directory (every network; the VAE trained, the rest as given).

Every ``train.save_ckpt_interval`` steps the stage saves where it stands in ``OUT.progress``
(networks, Adam moments, data position, log): an interrupted stage run again with the same
options goes on from there and ends with the same weights; the folder goes once ``OUT`` is
written.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from svdeploy.config import ModelConfig
from svdeploy.errors import CheckpointError
from svdeploy.fsutil import (
    apply_umask,
    json_text,
    make_temp_dir,
    raise_if_interrupted,
    remove_quietly,
    replace_dir,
    staged_dir,
)
from svdeploy.models.keys import NETWORK_PREFIXES
from svdeploy.models.loading import WEIGHTS_FILE

from .config import AutoencoderConfig, TrainingConfig
from .data import VideoDataset

logger = logging.getLogger(__name__)

STAGE_DIR = "autoencoder"
LOG_FILE = "autoencoder_log.csv"
DONE_FILE = "stage.json"
PROGRESS_SUFFIX = ".progress"  # OUT.progress: the last snapshot of a stage under way
PROGRESS_STATE, PROGRESS_CELL = "progress.json", "train_cell.ckpt"
VAE_NETWORKS = ("vae_encoder", "vae_decoder")


def _cells():
    """The MindSpore cells, built lazily so importing this module needs no MindSpore."""
    import mindspore as ms
    from mindspore import nn, ops

    class AutoencoderLoss(nn.Cell):
        """Reconstruction + KL of B·F frames through the VAE; see the module docstring."""

        def __init__(
            self,
            encoder: nn.Cell,
            decoder: nn.Cell,
            num_frames: int,
            kl_weight: float,
            freeze_encoder: bool = False,
        ) -> None:
            super().__init__()
            self.freeze_encoder = freeze_encoder
            self.encoder = encoder
            self.decoder = decoder
            self.num_frames = num_frames
            self.kl_weight = kl_weight
            self.embed_dim = encoder.embed_dim

        def construct(self, frames: ms.Tensor, eps: ms.Tensor, weight: ms.Tensor) -> ms.Tensor:
            moments = self.encoder.quant_conv(self.encoder.encoder(frames))
            if self.freeze_encoder:
                moments = ops.stop_gradient(moments)
            mean = moments[:, : self.embed_dim]
            logvar = ops.clip_by_value(moments[:, self.embed_dim :], -30.0, 20.0)
            z = mean + ops.exp(0.5 * logvar) * eps
            recon = self.decoder(z, self.num_frames)
            rec = ops.sum(weight * ops.square(recon - frames)) / (ops.sum(weight) * 3.0)
            kl = 0.5 * ops.mean(ops.square(mean) + ops.exp(logvar) - 1.0 - logvar)
            return rec + self.kl_weight * kl

    return AutoencoderLoss


JOINT, DECODER_ONLY = "joint", "decoder"  # phase names, as the stage log writes them


@dataclasses.dataclass(frozen=True)
class Phase:
    """One phase of the stage: which networks learn, for how many steps, with which weights."""

    name: str  # JOINT (encoder + decoder) or DECODER_ONLY (encoder frozen); the log's phase
    steps: int
    object_weight: float
    stream: int  # the posterior-noise stream of the phase's seed

    @property
    def encoder_frozen(self) -> bool:
        return self.name == DECODER_ONLY


def phases(cfg: AutoencoderConfig) -> List[Phase]:
    found = [Phase(JOINT, cfg.steps, cfg.object_weight, 7)]
    if cfg.decoder_steps:
        found.append(Phase(DECODER_ONLY, cfg.decoder_steps, cfg.decoder_object_weight, 8))
    return found


def learning_rates(cfg: AutoencoderConfig, steps: int) -> List[float]:
    """Per-step learning rate of a phase of ``steps``: linear warm-up to ``lr``, then a cosine
    to ``lr``/20."""
    warmup = min(cfg.warmup_steps, steps)
    rates = []
    for step in range(steps):
        if step < warmup:
            rates.append(cfg.lr * (step + 1) / warmup)
            continue
        progress = (step - warmup) / max(steps - warmup, 1)
        low = cfg.lr / 20
        rates.append(low + 0.5 * (cfg.lr - low) * (1 + math.cos(math.pi * progress)))
    return rates


def pixel_weights(frames: np.ndarray, object_weight: float) -> np.ndarray:
    """(N, 1, H, W) reconstruction weights of (N, 3, H, W) frames in [−1, 1]: 1 on the
    background, up to 1 + ``object_weight`` where a pixel differs from the frame's border median
    (the background level) by 0.1 or more in some channel (0.05 on the [0, 1] scale)."""
    border = np.concatenate(
        [frames[:, :, 0], frames[:, :, -1], frames[:, :, :, 0], frames[:, :, :, -1]], axis=-1
    )  # (N, 3, 2H + 2W)
    level = np.median(border, axis=-1)[:, :, None, None]  # (N, 3, 1, 1)
    distance = np.abs(frames - level).max(axis=1, keepdims=True)  # (N, 1, H, W)
    return (1.0 + object_weight * np.minimum(distance / 0.1, 1.0)).astype(np.float32)


def _samples(dataset: VideoDataset) -> Iterator:
    """The dataset's samples from where it stands, epoch after epoch, without end: a phase
    may stop exactly at an epoch's end, and what reads next must go on into the next epoch."""
    while True:
        yield from dataset


def _clip_batches(dataset: VideoDataset, batch: int):
    while True:
        group = []  # an epoch's last clips that do not fill a batch are left out
        for sample in dataset:
            group.append(sample.frames)
            if len(group) == batch:
                yield np.concatenate(group).astype(np.float32)  # (B·F, 3, H, W)
                group = []


def train_autoencoder(
    cfg: TrainingConfig,
    model_cfg: ModelConfig,
    source: Path,
    out: Path,
    kernels,
    progress: bool = True,
) -> Path:
    """Run the stage from the checkpoint ``source`` and write the checkpoint ``out``. A
    complete ``out`` (from an earlier run with the same options) is reused as it is; an
    interrupted one goes on from its last snapshot (``OUT.progress``)."""
    if (out / DONE_FILE).is_file():
        logger.info("autoencoder stage already done: %s", out)
        return out
    import mindspore as ms

    ae = cfg.train.autoencoder
    init = cfg.train.dataset.init_args
    ms.set_seed(cfg.environment.seed)
    weights = source / WEIGHTS_FILE
    encoder, decoder = _vae(model_cfg, kernels, weights)
    dataset = VideoDataset(dataclasses.replace(init, seed=init.seed + 1))
    snapshots = Snapshots(
        progress_dir(out), stage_options(cfg, source), cfg.train.save_ckpt_interval
    )
    done = snapshots.load() or StageProgress(scale=model_cfg.vae.scale_factor)
    if done.dataset is not None:
        dataset.load_state_dict(done.dataset)
    batches = _clip_batches(dataset, ae.batch_size)
    factor = model_cfg.vae.downsample_factor
    latent = (model_cfg.vae.embed_dim, init.height // factor, init.width // factor)
    rows, scale = list(done.rows), done.scale
    for index, phase in enumerate(phases(ae)):
        if index < done.phase:
            continue  # finished before the interruption: its weights are in the snapshot
        step_cell = _train_cell(encoder, decoder, phase, ae, init.frames)
        start = done.step if index == done.phase else 0
        if start:
            snapshots.restore(step_cell)
        before = StageProgress(index, 0, list(rows), scale)
        save = partial(snapshots.save, step_cell, phase, before, dataset)
        rows += _run_steps(
            step_cell, batches, latent, phase, cfg.environment.seed, progress, start, save
        )
        if not phase.encoder_frozen:  # the encoder is final: measure its latents' spread now
            scale = latent_scale(encoder, dataset, ae.scale_samples)
    logger.info(
        "autoencoder: final loss %.4g; vae.scale_factor = %.5f",
        rows[-1]["loss"] if rows else float("nan"),
        scale,
    )
    new_cfg = dataclasses.replace(
        model_cfg, vae=dataclasses.replace(model_cfg.vae, scale_factor=scale)
    )
    written = write_stage_checkpoint(
        out, new_cfg, weights, {"vae_encoder": encoder, "vae_decoder": decoder}, rows
    )
    remove_quietly(snapshots.folder)
    return written


def _vae(model_cfg: ModelConfig, kernels, weights: Path) -> List[Any]:
    """The VAE encoder and temporal decoder, filled from ``weights`` (strictly)."""
    from svdeploy.models import build_network
    from svdeploy.models.loading import load_into_cell

    nets = [build_network(name, model_cfg, kernels) for name in VAE_NETWORKS]
    for name, net in zip(VAE_NETWORKS, nets):
        load_into_cell(net, weights, NETWORK_PREFIXES[name], strict=True)
    return nets


def _train_cell(encoder, decoder, phase: Phase, ae: AutoencoderConfig, frames: int):
    """The phase's train cell: its loss over the VAE, Adam over what learns in the phase."""
    from mindspore import nn

    frozen = phase.encoder_frozen
    loss_net = _cells()(encoder, decoder, frames, 0.0 if frozen else ae.kl_weight, frozen)
    params = decoder.trainable_params() if frozen else loss_net.trainable_params()
    rates = learning_rates(ae, phase.steps)
    optimizer = nn.Adam(params, learning_rate=rates, beta1=0.9, beta2=0.99)
    step_cell = nn.TrainOneStepCell(loss_net, optimizer)
    step_cell.set_train(True)
    return step_cell


def progress_dir(out: Path) -> Path:
    """Where the stage writing ``out`` keeps its snapshot."""
    return out.parent / (out.name + PROGRESS_SUFFIX)


def stage_options(cfg: TrainingConfig, source: Path) -> Dict[str, Any]:
    """What a snapshot is valid for: the stage's options, the data, the seed and the source."""
    import json

    options = {
        "autoencoder": dataclasses.asdict(cfg.train.autoencoder),
        "dataset": dataclasses.asdict(cfg.train.dataset.init_args),
        "seed": cfg.environment.seed,
        "source": str(Path(source).resolve()),
    }
    return json.loads(json.dumps(options, default=str))  # as the JSON file will hold it


@dataclasses.dataclass
class StageProgress:
    """Where the stage stands: the phase under way and the steps it has taken, the log of
    every step so far, the latent scale (once the joint phase has measured it) and the
    data position."""

    phase: int = 0
    step: int = 0
    rows: List[Dict[str, object]] = dataclasses.field(default_factory=list)
    scale: float = 1.0
    dataset: Optional[Dict[str, Any]] = None


@dataclasses.dataclass
class Snapshots:
    """The stage's snapshots in ``folder``: the train cell (networks and Adam state) as a
    MindSpore checkpoint and a StageProgress, replaced every ``every`` steps of a phase."""

    folder: Path
    options: Dict[str, Any]
    every: int

    def save(
        self,
        step_cell,
        phase: Phase,
        before: StageProgress,
        dataset: VideoDataset,
        step: int,
        phase_rows: List[Dict[str, object]],
    ) -> None:
        """After ``step`` steps of ``phase`` (whose own log is ``phase_rows``)."""
        import mindspore as ms

        if step % self.every or step >= phase.steps:
            return  # a finished phase goes on to the next (or to OUT) without a snapshot
        state = dataclasses.replace(
            before, step=step, rows=before.rows + phase_rows, dataset=dataset.state_dict()
        )
        shown = str(self.folder)
        with staged_dir(
            self.folder, CheckpointError, "snapshot", "saving a snapshot to", shown, logger.info
        ) as tmp:
            ms.save_checkpoint(step_cell, str(tmp / PROGRESS_CELL))
            data = {"options": self.options, **dataclasses.asdict(state)}
            (tmp / PROGRESS_STATE).write_text(json_text(data, 1, allow_nan=True), "utf-8")
            replace_dir(tmp, self.folder)

    def load(self) -> Optional[StageProgress]:
        """The saved progress, or None where there is none or it was made with other options
        (then the folder is removed and the stage starts over)."""
        import json

        path = self.folder / PROGRESS_STATE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text("utf-8"))
            saved = data.pop("options", None)
        except (OSError, ValueError, TypeError) as exc:
            raise CheckpointError(
                f"{path}: unreadable autoencoder progress ({exc}); delete {self.folder} to "
                "start the stage over"
            ) from None
        if saved != self.options:
            logger.warning(
                "%s was made with other options (autoencoder, data, seed or source); the "
                "autoencoder stage starts over",
                self.folder,
            )
            remove_quietly(self.folder)
            return None
        try:
            state = StageProgress(**data)
        except TypeError as exc:
            raise CheckpointError(
                f"{path}: not an autoencoder progress file ({exc}); delete {self.folder} to "
                "start the stage over"
            ) from None
        logger.info(
            "autoencoder stage: going on from %s (phase %d, step %d)",
            self.folder,
            state.phase + 1,
            state.step,
        )
        return state

    def restore(self, step_cell) -> None:
        """Fill the train cell (networks and optimizer) from the snapshot, strictly."""
        import mindspore as ms

        path = self.folder / PROGRESS_CELL
        left = ms.load_param_into_net(step_cell, ms.load_checkpoint(str(path)), strict_load=True)
        if any(left):
            raise CheckpointError(
                f"{path} does not match the autoencoder stage's train cell: not loaded "
                f"{', '.join(left[0][:5]) or 'none'}; unused {', '.join(left[1][:5]) or 'none'}"
            )


def _run_steps(
    step_cell,
    batches: Iterator[np.ndarray],
    latent: Tuple[int, int, int],
    phase: Phase,
    seed: int,
    progress: bool,
    start: int = 0,
    after_step: Optional[Callable[[int, List[Dict[str, object]]], None]] = None,
) -> List[Dict[str, object]]:
    """The phase's optimizer steps from ``start``, one log row each; ``after_step(steps
    taken, rows)`` follows each. The posterior noise is drawn from the seed, the phase and the
    step, so that a rerun (or a resumed run) takes the same steps."""
    from mindspore import Tensor
    from tqdm import tqdm

    rows: List[Dict[str, object]] = []
    desc = "svd-train autoencoder" + (" (decoder)" if phase.encoder_frozen else "")
    bar = tqdm(total=phase.steps, initial=start, desc=desc, unit="step", disable=not progress)
    for step in range(start, phase.steps):
        raise_if_interrupted()  # MindSpore may have swallowed a Ctrl-C inside the last step
        started = time.perf_counter()
        frames = next(batches)
        rng = np.random.default_rng([seed, phase.stream, step])
        eps = rng.standard_normal((frames.shape[0],) + latent, dtype=np.float32)
        weight = pixel_weights(frames, phase.object_weight)
        loss = float(step_cell(Tensor(frames), Tensor(eps), Tensor(weight)).asnumpy())
        seconds = time.perf_counter() - started
        rows.append({"phase": phase.name, "step": step + 1, "loss": loss, "seconds": seconds})
        bar.set_postfix(loss=f"{loss:.4g}")
        bar.update(1)
        if after_step is not None:
            after_step(step + 1, rows)
    bar.close()
    return rows


def latent_scale(encoder, dataset: VideoDataset, clips: int) -> float:
    """1 / standard deviation of the encoder's posterior means over the next ``clips`` of
    ``dataset`` (into its next epoch where this one ends), which it leaves where it was (the
    decoder phase reads on from there)."""
    from mindspore import Tensor

    position = dataset.state_dict()

    encoder.set_train(False)
    values = []
    for index, sample in enumerate(_samples(dataset)):
        if index >= clips:
            break
        values.append(encoder(Tensor(sample.frames.astype(np.float32))).asnumpy().ravel())
    std = float(np.concatenate(values).std())
    dataset.load_state_dict(position)
    return 1.0 / max(std, 1e-6)


def write_stage_checkpoint(
    out: Path,
    model_cfg: ModelConfig,
    source_weights: Path,
    trained: Dict[str, object],
    rows: Sequence[Dict[str, object]],
) -> Path:
    """A checkpoint directory: ``source_weights`` with the ``trained`` networks' tensors
    replaced, ``model_cfg`` as its config, the loss log, and ``stage.json`` written last."""
    import json

    from svdeploy.models.weights_io import SafetensorsFile

    from .checkpoint import write_float32_checkpoint

    tensors: Dict[str, np.ndarray] = {}
    with SafetensorsFile(source_weights) as src:
        for name in src.infos:
            tensors[name] = src.read_float32(name)
    for network, cell in trained.items():
        for name, param in cell.parameters_and_names():
            key = NETWORK_PREFIXES[network] + name
            if key not in tensors:
                raise KeyError(f"{key}: not in {source_weights}")
            tensors[key] = param.asnumpy().astype(np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        shutil.rmtree(out)  # an incomplete stage folder (no stage.json) of an interrupted run
    tmp = make_temp_dir(out)
    try:
        write_float32_checkpoint(tmp, model_cfg, tensors, "svd-train autoencoder")
        with open(tmp / LOG_FILE, "w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=("phase", "step", "loss", "seconds"))
            writer.writeheader()
            writer.writerows(rows)
        (tmp / DONE_FILE).write_text(
            json.dumps(
                {
                    "stage": "autoencoder",
                    "steps": len(rows),
                    "final_loss": rows[-1]["loss"] if rows else None,
                    "scale_factor": model_cfg.vae.scale_factor,
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
        apply_umask(tmp)
        replace_dir(tmp, out)
    except BaseException:
        remove_quietly(tmp)
        raise
    return out
