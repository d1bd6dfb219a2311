"""svd-train's loop: data → frozen encoders → compiled gradient steps → checkpoints.

One optimizer step = ``gradient_accumulation_steps`` micro-batches of ``batch_size`` clips per
worker. Clips come from one continuous stream over the dataset's epochs; with data parallelism
every worker walks the same stream and keeps its own share of each micro-batch (so the dataset
position is the same on every worker). Every random draw is seeded by the clip's index in the
stream (:func:`svdeploy.train.loss.draw_video`), so a resumed run continues exactly.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from svdeploy.config import ModelConfig, to_dict, write_yaml_atomic
from svdeploy.errors import CheckpointError, ConfigError
from svdeploy.fsutil import (
    apply_umask,
    atomic_write_text,
    make_temp_dir,
    raise_if_interrupted,
    remove_quietly,
    replace_dir,
)
from svdeploy.models.keys import (
    NETWORK_PREFIXES,
    network_parameter_shapes,
    numel,
    sgm_parameter_shapes,
)
from svdeploy.models.loading import WEIGHTS_FILE, read_checkpoint_dir, resolve_checkpoint_dir

from . import checkpoint as ckpt
from .config import TrainingConfig
from .data import Sample, VideoDataset
from .loss import draw_video
from .step import is_temporal

if TYPE_CHECKING:
    from svdeploy.kernels.config import KernelConfig

logger = logging.getLogger(__name__)

LOG_FILE = "train_log.csv"
CONFIG_COPY = "train_config.yaml"
RANDOM_INIT_DIR = "random_init"
LOG_COLUMNS = (
    "step",
    "epoch",
    "loss",
    "lr",
    "grad_norm",
    "loss_scale",
    "applied",
    "seconds",
    "samples_seen",
    "clips",
)


def training_kernels(conv: str = "auto", compute_dtype: str = "fp32") -> KernelConfig:
    """The op variants of svd-train's graphs (``KernelConfig.for_training`` says why each);
    ``auto`` times native and im2col convolutions on this machine once."""
    from svdeploy.kernels.config import KernelConfig

    if conv == "auto":
        from svdeploy.kernels.probe import fastest_conv

        conv = fastest_conv()
        logger.info("training convolutions: %s (probe)", conv)
    return KernelConfig.for_training(conv, compute_dtype)


# ---------------------------------------------------------------------------------------------
# Parameter counts (analytic: no network is built)
# ---------------------------------------------------------------------------------------------
@dataclass
class ParameterCounts:
    trainable: int
    trainable_tensors: int
    frozen_unet: int
    frozen_other: int  # VAE encoder, VAE decoder, image encoder

    @property
    def frozen(self) -> int:
        return self.frozen_unet + self.frozen_other

    @property
    def total(self) -> int:
        return self.trainable + self.frozen

    def summary(self) -> str:
        return (
            f"trainable parameters: {self.trainable:,} in {self.trainable_tensors} tensors; "
            f"frozen: {self.frozen:,} (U-Net {self.frozen_unet:,}, VAE encoder + decoder + "
            f"image encoder {self.frozen_other:,}); total {self.total:,}"
        )


def count_parameters(cfg: ModelConfig, temporal_only: bool) -> ParameterCounts:
    """Trained vs frozen parameters of ``cfg`` from the analytic shape table."""
    unet = network_parameter_shapes(cfg, "unet")
    trained = {n: s for n, s in unet.items() if is_temporal(n) or not temporal_only}
    total_unet = sum(numel(s) for s in unet.values())
    total_all = sum(numel(s) for s in sgm_parameter_shapes(cfg).values())
    n_trained = sum(numel(s) for s in trained.values())
    return ParameterCounts(
        trainable=n_trained,
        trainable_tensors=len(trained),
        frozen_unet=total_unet - n_trained,
        frozen_other=total_all - total_unet,
    )


# ---------------------------------------------------------------------------------------------
# Environment (called by the CLI; library code takes the MindSpore context as it finds it)
# ---------------------------------------------------------------------------------------------
def setup_environment(
    cfg: TrainingConfig, model_cfg: Optional[ModelConfig] = None
) -> Tuple[int, int]:
    """Set mode and device; with ``environment.distributed`` initialise MindSpore's collective
    communication (the processes are started by ``msrun``) in DATA_PARALLEL mode with mean
    gradients; with ``environment.compile_cache`` point MindSpore's graph cache at
    :func:`compile_cache_dir`. Returns (rank, world size)."""
    import mindspore as ms

    env = cfg.environment
    ms.set_context(mode=ms.GRAPH_MODE if env.mode == 0 else ms.PYNATIVE_MODE)
    ms.set_device(env.device_target)
    rank, world = 0, 1
    if env.distributed:
        from mindspore.communication import get_group_size, get_rank, init

        try:
            init()
        except RuntimeError as exc:
            first = next((line for line in str(exc).splitlines() if line.strip()), str(exc))
            raise ConfigError(
                f"environment.distributed = true, but MindSpore's communication did "
                f"not start ({first.strip()[:300]}); start the workers with msrun "
                "(docs/TRAINING.md)"
            ) from None
        rank, world = get_rank(), get_group_size()
        ms.set_auto_parallel_context(
            parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True, device_num=world
        )
    if env.compile_cache and env.mode == 0:
        if model_cfg is None:
            raise ConfigError("environment.compile_cache needs the model config")
        directory = compile_cache_dir(cfg, model_cfg, world)
        # MindSpore reads these when a graph is compiled (the context option is deprecated)
        os.environ["MS_COMPILER_CACHE_ENABLE"] = "1"
        os.environ["MS_COMPILER_CACHE_PATH"] = str(directory)
        logger.info("graph compile cache: %s", directory)
    return rank, world


def compile_cache_dir(cfg: TrainingConfig, model_cfg: ModelConfig, world: int) -> Path:
    """``OUTPUT_DIR/compile_cache/KEY``: MindSpore's compile cache checks the source files a
    graph came from but not the arguments the cells were built with (measured: a cache written
    for the tiny U-Net was loaded for a smaller one and failed in a Reshape), so the folder is
    keyed by everything baked into the graphs: networks, clip and batch shapes, trained
    parameters, precision, optimizer constants, workers, MindSpore and svdeploy's sources."""
    import hashlib
    import json

    import mindspore as ms

    import svdeploy
    import svdeploy.kernels
    import svdeploy.models
    import svdeploy.train

    t = cfg.train
    init = t.dataset.init_args
    key = {
        "networks": {s: to_dict(getattr(model_cfg, s)) for s in NETWORK_SECTIONS},
        "clip": [init.frames, init.height, init.width],
        "batch": t.dataloader.batch_size,
        "temporal_only": t.temporal_only,
        "compute_dtype": t.compute_dtype,
        "optimizer": to_dict(t.optimizer),
        "world": world,
        "device": cfg.environment.device_target,
        "mindspore": ms.__version__,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8"))
    for package in (svdeploy, svdeploy.models, svdeploy.kernels, svdeploy.train):
        for source in sorted(Path(str(package.__file__)).resolve().parent.glob("*.py")):
            digest.update(source.name.encode("utf-8") + b"\0" + source.read_bytes())
    return Path(t.output_dir).resolve() / "compile_cache" / digest.hexdigest()[:16]


def communication_world() -> Tuple[int, int]:
    """(rank, world size) of an initialised communication group, else (0, 1)."""
    import mindspore as ms

    if ms.get_auto_parallel_context("parallel_mode") != ms.ParallelMode.DATA_PARALLEL:
        return 0, 1
    from mindspore.communication import get_group_size, get_rank

    return get_rank(), get_group_size()


# ---------------------------------------------------------------------------------------------
# Model config and starting weights
# ---------------------------------------------------------------------------------------------
NETWORK_SECTIONS = ("unet", "vae", "image_encoder")


def _with_scale_factor(cfg: ModelConfig, scale_factor: float) -> ModelConfig:
    import dataclasses

    return dataclasses.replace(cfg, vae=dataclasses.replace(cfg.vae, scale_factor=scale_factor))


def check_same_networks(given: ModelConfig, found: ModelConfig, where: str) -> None:
    """The networks (not the latent scale, a property of the trained VAE) must agree."""
    for section in NETWORK_SECTIONS:
        a, b = to_dict(getattr(given, section)), to_dict(getattr(found, section))
        if section == "vae":
            a.pop("scale_factor"), b.pop("scale_factor")
        if a != b:
            keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            raise ConfigError(
                f"--svd-config describes other networks than {where}: {section}."
                f"{', '.join(keys)} differ "
                f"({', '.join(f'{k}: {a.get(k)!r} vs {b.get(k)!r}' for k in keys[:3])})"
            )


def write_random_checkpoint(cfg: ModelConfig, directory: Path, seed: int) -> Path:
    """A checkpoint directory of randomly initialised networks: MindSpore's initialisers after
    ``mindspore.set_seed(seed)`` (which sets MindSpore's global seed, as any seeded run does)."""
    import mindspore as ms

    from svdeploy.models import NETWORK_NAMES, build_network

    ms.set_seed(seed)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(directory)
    try:
        tensors: Dict[str, np.ndarray] = {}
        for network in NETWORK_NAMES:
            net = build_network(network, cfg)
            for name, param in net.parameters_and_names():
                tensors[NETWORK_PREFIXES[network] + name] = param.asnumpy().astype(np.float32)
        expected = sgm_parameter_shapes(cfg)
        if set(tensors) != set(expected):
            raise CheckpointError(
                "random networks do not match the analytic parameter table: "
                f"{sorted(set(tensors) ^ set(expected))[:5]}"
            )
        ckpt.write_float32_checkpoint(tmp, cfg, tensors, "svd-train random_init")
        apply_umask(tmp)
        replace_dir(tmp, directory)
    except BaseException:
        remove_quietly(tmp)
        raise
    return directory


def _wait_for(path: Path, what: str, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise CheckpointError(f"waited {timeout:.0f} s for {what} at {path}")
        time.sleep(0.5)


# ---------------------------------------------------------------------------------------------
# Training log
# ---------------------------------------------------------------------------------------------
def read_log(path: Path) -> List[Dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, "r", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _write_log_atomic(path: Path, rows: Sequence[Dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LOG_COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in LOG_COLUMNS})
    atomic_write_text(path, buffer.getvalue())


# ---------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    output_dir: Path
    start_step: int  # optimizer steps already done when this run started
    steps: int  # optimizer steps done when it ended
    total_steps: int
    last_checkpoint: Optional[Path]
    losses: List[float] = field(default_factory=list)  # this run's per-step losses
    step_seconds: List[float] = field(default_factory=list)  # this run's per-step times
    compile_seconds: float = 0.0  # compiling every graph before the first step
    counts: Optional[ParameterCounts] = None


class Trainer:
    """Build everything for ``cfg`` and train. ``model_cfg`` (``--svd-config``) may be None
    when starting from a checkpoint directory: its config.yaml is used."""

    def __init__(
        self,
        cfg: TrainingConfig,
        model_cfg: Optional[ModelConfig] = None,
        resume: bool = False,
        progress: bool = True,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
    ) -> None:
        self.cfg = cfg
        self.progress = progress
        if rank is None or world_size is None:
            rank, world_size = communication_world() if cfg.environment.distributed else (0, 1)
        self.rank, self.world = rank, world_size
        self.out = Path(cfg.train.output_dir)
        self.resume_from: Optional[Path] = None
        self.state: Optional[Dict[str, Any]] = None
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            for partial in ckpt.remove_partial(self.out):
                logger.info("removed the incomplete checkpoint %s of an interrupted run", partial)
        existing = ckpt.latest_checkpoint(self.out)
        if existing is not None and not resume:
            raise ConfigError(
                f"train.output_dir {str(self.out)!r} already holds checkpoints (latest "
                f"{existing.name}); pass --resume to continue that run, or choose "
                "another --train.output_dir"
            )
        if resume and existing is not None:
            self.resume_from = existing
            self.state = ckpt.read_state(existing)
            source = existing
        elif cfg.train.random_init:
            if model_cfg is None:
                raise ConfigError("train.random_init needs --svd-config (the networks to build)")
            source = self.out / RANDOM_INIT_DIR
            if self.rank == 0 and not source.exists():
                write_random_checkpoint(model_cfg, source, cfg.environment.seed)
            _wait_for(source, "the random initial weights")
        else:
            source = resolve_checkpoint_dir(str(cfg.train.pretrained))
        if resume and existing is None:
            logger.info(
                "--resume: no checkpoint under %s yet; starting from %s",
                ckpt.checkpoints_dir(self.out),
                source,
            )
        found_cfg, self.source_weights = read_checkpoint_dir(source)
        if model_cfg is not None:
            check_same_networks(model_cfg, found_cfg, str(source))
        self.kernels = training_kernels(cfg.train.conv, cfg.train.compute_dtype)
        if cfg.train.autoencoder.steps and self.resume_from is None:
            source = self._autoencoder_stage(found_cfg, source)
            found_cfg, self.source_weights = read_checkpoint_dir(source)
        # the starting checkpoint's latent scale wins (the autoencoder stage sets it)
        self.model_cfg = _with_scale_factor(model_cfg or found_cfg, found_cfg.vae.scale_factor)
        self.source = source
        self._build()

    def _autoencoder_stage(self, model_cfg: ModelConfig, source: Path) -> Path:
        """Fit the VAE first (train.autoencoder); every worker waits for rank 0's result."""
        from .autoencoder import DONE_FILE, STAGE_DIR, train_autoencoder

        out = self.out / STAGE_DIR
        if self.rank == 0:
            train_autoencoder(self.cfg, model_cfg, source, out, self.kernels, self.progress)
        _wait_for(out / DONE_FILE, "the autoencoder stage", timeout=24 * 3600.0)
        return out

    # ---- construction ------------------------------------------------------------------------
    def _build(self) -> None:
        import mindspore as ms
        from mindspore import ParameterTuple

        from svdeploy.models import build_network
        from svdeploy.models.loading import load_into_cell

        from .conditioning import FrozenConditioner
        from .loss import EDMLoss
        from .step import StepRunner, select_trainable

        cfg, mcfg = self.cfg, self.model_cfg
        init = cfg.train.dataset.init_args
        if cfg.train.compute_dtype == "bf16" and ms.get_context("device_target") == "CPU":
            # measured with MindSpore 2.10: the CPU MatMul kernel has no BFloat16 variant
            raise ConfigError(
                "train.compute_dtype = 'bf16': MindSpore's CPU kernels have no "
                "bfloat16 matmul; use fp32 or fp16 (with LossScale) on CPU, bf16 "
                "on Ascend"
            )
        self.unet = build_network("unet", mcfg, self.kernels)
        vae_encoder = build_network("vae_encoder", mcfg, self.kernels.frozen_encoder())
        image_encoder = build_network("image_encoder", mcfg)
        for name, net in (
            ("unet", self.unet),
            ("vae_encoder", vae_encoder),
            ("image_encoder", image_encoder),
        ):
            load_into_cell(net, self.source_weights, NETWORK_PREFIXES[name], strict=True)
        self.trainable_names, self.frozen_names = select_trainable(
            self.unet, cfg.train.temporal_only
        )
        self.counts = count_parameters(mcfg, cfg.train.temporal_only)
        params = dict(self.unet.parameters_and_names())
        self.trainable_params = ParameterTuple([params[n] for n in self.trainable_names])
        self.unet.set_train(True)
        self.conditioner = FrozenConditioner(
            vae_encoder, image_encoder, mcfg.vae.scale_factor, cfg.train.latent_cache_mb * 2**20
        )
        self.loss_net = EDMLoss(self.unet, init.frames, mcfg.unet.addition_time_embed_dim)
        reducer_factory = self._reducer_factory()
        settings = cfg.train.settings
        self.runner = StepRunner(
            self.loss_net,
            self.trainable_params,
            cfg.train.optimizer,
            settings.clip_norm if settings.clip_grad else None,
            settings.drop_overflow_update,
            reducer_factory,
            self.world,
        )
        self.dataset = VideoDataset(init)

    def _reducer_factory(self) -> Optional[Callable[[Any], Any]]:
        """Across several workers the gradients are averaged over all of them (None: one
        worker, nothing to reduce)."""
        if self.world <= 1:
            return None
        from mindspore import nn
        from mindspore.communication import GlobalComm

        world = self.world

        def make_reducer(accum: Any) -> nn.Cell:
            return nn.DistributedGradReducer(
                accum, mean=True, degree=world, group=GlobalComm.WORLD_COMM_GROUP
            )

        return make_reducer

    # ---- bookkeeping -------------------------------------------------------------------------
    def total_steps(self) -> int:
        t = self.cfg.train
        if t.max_steps is not None:
            return t.max_steps
        per_step = t.dataloader.batch_size * t.settings.gradient_accumulation_steps * self.world
        videos = len(self.dataset)
        per_epoch = videos // per_step if t.dataloader.drop_remainder else -(-videos // per_step)
        if per_epoch < 1:
            logger.warning(
                "%d usable videos are fewer than one step needs (%d = batch_size × "
                "gradient_accumulation_steps × workers); counting one step per epoch",
                videos,
                per_step,
            )
            per_epoch = 1
        return t.epochs * per_epoch

    def _full_names(self) -> List[str]:
        return [NETWORK_PREFIXES["unet"] + n for n in self.trainable_names]

    def _state(
        self, step: int, total: int, samples_seen: int, scaler: Any, loss: float
    ) -> Dict[str, Any]:
        t = self.cfg.train
        return {
            "step": step,
            "total_steps": total,
            "samples_seen": samples_seen,
            "dataset": self.dataset.state_dict(),
            "loss_scale": scaler.state_dict(),
            "seed": self.cfg.environment.seed,
            "world_size": self.world,
            "batch_size": t.dataloader.batch_size,
            "gradient_accumulation_steps": t.settings.gradient_accumulation_steps,
            "temporal_only": t.temporal_only,
            "trainable_tensors": len(self.trainable_names),
            "loss": loss,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "train_config": to_dict(self.cfg),
        }

    def _warn_config_changes(self, saved: Dict[str, Any]) -> None:
        def flat(d: Any, prefix: str = "") -> Dict[str, Any]:
            if isinstance(d, dict):
                out: Dict[str, Any] = {}
                for k, v in d.items():
                    out.update(flat(v, f"{prefix}{k}."))
                return out
            return {prefix[:-1]: d}

        before, now = flat(saved), flat(to_dict(self.cfg))
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        if changed:
            logger.warning(
                "resuming with changed options: %s",
                ", ".join(f"{k} {before.get(k)!r} → {now.get(k)!r}" for k in changed),
            )

    def compile_graphs(self) -> float:
        """Compile every graph before the first step, always in the same order (MindSpore's
        compile cache numbers a process's graphs in compile order). Returns the seconds."""
        from mindspore import Tensor

        from .step import MicroBatch

        started = time.perf_counter()
        t = self.cfg.train
        init = t.dataset.init_args
        b, f = t.dataloader.batch_size, init.frames
        factor = self.model_cfg.vae.downsample_factor
        c, h, w = self.model_cfg.latent_channels, init.height // factor, init.width // factor
        size = self.model_cfg.image_encoder.image_size

        def zeros(*shape: int) -> np.ndarray:
            return np.zeros(shape, np.float32)

        one = Tensor(np.float32(1.0))
        for n in sorted({f, b}):  # one clip's frames; the batch's cond images
            self.conditioner.vae_encoder.compile(Tensor(zeros(n, 3, init.height, init.width)))
        self.conditioner.image_encoder.compile(Tensor(zeros(b, 3, size, size)))
        batch = MicroBatch(
            x0=zeros(b * f, c, h, w),
            image_latent=zeros(b, c, h, w),
            context=zeros(b, 1, self.model_cfg.unet.context_dim),
            time_ids=zeros(b, 3),
            sigma=np.ones(b, np.float32),
            noise=zeros(b * f, c, h, w),
            keep=np.ones(b, np.float32),
        )
        self.runner.accumulate.compile(*batch.tensors(), one)
        self.runner.finish.compile(one, one)
        self.runner.apply.compile(one, one)
        self.runner.zero.compile()
        seconds = time.perf_counter() - started
        logger.info("graphs compiled in %.1f s", seconds)
        return seconds

    def _sample_stream(self) -> Iterator[Sample]:
        while True:
            for sample in self.dataset:
                yield sample

    # ---- the loop ----------------------------------------------------------------------------
    def train(self) -> TrainResult:
        """Train to the last step (checkpoints on the way) and return what happened."""
        import mindspore as ms
        from tqdm import tqdm

        from .step import LossScaler

        scaler = LossScaler.from_config(self.cfg.LossScale)
        step, samples_seen = self._resume(scaler)
        total = self.total_steps()
        result = TrainResult(
            output_dir=self.out,
            start_step=step,
            steps=step,
            total_steps=total,
            last_checkpoint=self.resume_from,
            counts=self.counts,
        )
        self._log_plan(total)
        log_path = self.out / LOG_FILE
        if self.rank == 0:
            self._start_log(log_path, step)
        if step >= total:
            logger.info("nothing to do: step %d of %d already done", step, total)
            return result

        stream = self._sample_stream()
        if ms.get_context("mode") == ms.GRAPH_MODE:
            result.compile_seconds = self.compile_graphs()
        bar = tqdm(
            total=total,
            initial=step,
            unit="step",
            desc="svd-train",
            dynamic_ncols=True,
            disable=not self.progress or self.rank != 0,
        )
        try:
            self._run_steps(result, stream, bar, step, samples_seen, scaler, log_path)
        finally:
            bar.close()
        return result

    def _run_steps(
        self,
        result: TrainResult,
        stream: Iterator[Sample],
        bar: Any,
        step: int,
        samples_seen: int,
        scaler: Any,
        log_path: Path,
    ) -> None:
        """The optimizer steps from ``step`` to the last, into ``result``, with a checkpoint
        every save_ckpt_interval steps and after the last, so that a stopped run can resume."""
        total = result.total_steps
        while step < total:
            raise_if_interrupted()  # MindSpore may have swallowed a Ctrl-C inside the last step
            started = time.perf_counter()
            out, lr, clips, samples_seen = self._optimizer_step(
                stream, step, total, samples_seen, scaler
            )
            step += 1
            seconds = time.perf_counter() - started
            result.losses.append(out.loss)
            result.step_seconds.append(seconds)
            result.steps = step
            if not out.finite:
                logger.warning(
                    "step %d: non-finite gradients (loss scale %g); update %s",
                    step,
                    out.loss_scale,
                    "applied" if out.applied else "skipped",
                )
            if self.rank == 0:
                self._append_log_row(log_path, step, out, lr, seconds, samples_seen, clips)
            bar.set_postfix(loss=f"{out.loss:.4g}", s_per_step=f"{seconds:.2f}", lr=f"{lr:.3g}")
            bar.update(1)
            if step % self.cfg.train.save_ckpt_interval == 0 or step == total:
                result.last_checkpoint = self._save(step, total, samples_seen, scaler, out.loss)

    def _resume(self, scaler: Any) -> Tuple[int, int]:
        """(step, clips seen) to start from: 0, 0 for a new run; else the resumed checkpoint's,
        with its optimizer moments, data position and loss scale restored."""
        if self.state is None:
            return 0, 0
        st = self.state
        try:
            step, samples_seen = int(st["step"]), int(st["samples_seen"])
            dataset_state, scale_state = st["dataset"], st["loss_scale"]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{self.resume_from}: incomplete training state ({exc})"
            ) from None
        ckpt.load_optimizer_state(
            self.resume_from / ckpt.OPTIMIZER_FILE,
            self._full_names(),
            self.runner.optimizer.exp_avg,
            self.runner.optimizer.exp_avg_sq,
            self.runner.optimizer.step,
        )
        self.dataset.load_state_dict(dataset_state)
        scaler.load_state_dict(scale_state)
        self._warn_config_changes(st.get("train_config", {}))
        logger.info(
            "resuming from %s: step %d, %d clips seen, dataset epoch %d index %d",
            self.resume_from,
            step,
            samples_seen,
            *self.dataset.position,
        )
        return step, samples_seen

    def _log_plan(self, total: int) -> None:
        t = self.cfg.train
        logger.info("%s", self.counts.summary())
        logger.info(
            "%d usable videos; %d optimizer steps of %d micro-batch(es) × %d clip(s) × %d "
            "worker(s); clips of %d frames at %d×%d",
            len(self.dataset),
            total,
            t.settings.gradient_accumulation_steps,
            t.dataloader.batch_size,
            self.world,
            t.dataset.init_args.frames,
            t.dataset.init_args.height,
            t.dataset.init_args.width,
        )

    def _start_log(self, log_path: Path, step: int) -> None:
        """The config copy, and the training log cut back to the step the run starts from."""
        write_yaml_atomic(to_dict(self.cfg), self.out / CONFIG_COPY)
        # rows after the checkpoint we resume from were never saved: drop them
        kept = [r for r in read_log(log_path) if self.state is not None and int(r["step"]) <= step]
        _write_log_atomic(log_path, kept)

    def _optimizer_step(
        self, stream: Iterator[Sample], step: int, total: int, samples_seen: int, scaler: Any
    ) -> Tuple[Any, float, List[str], int]:
        """One optimizer step: gradient accumulation over the micro-batches, then the update.
        Returns (the step's output, its learning rate, the clips it read, clips seen after)."""
        from .step import learning_rate

        t = self.cfg.train
        b, k = t.dataloader.batch_size, t.settings.gradient_accumulation_steps
        init = t.dataset.init_args
        image_shape = (3, init.height, init.width)
        factor = self.model_cfg.vae.downsample_factor
        latent_shape = (
            init.frames,
            self.model_cfg.latent_channels,
            init.height // factor,
            init.width // factor,
        )
        clips: List[str] = []
        for _ in range(k):
            group = [next(stream) for _ in range(b * self.world)]
            mine = group[self.rank * b : (self.rank + 1) * b]
            draws = [
                draw_video(
                    self.cfg.environment.seed,
                    samples_seen + self.rank * b + j,
                    t.diffusion,
                    image_shape,
                    latent_shape,
                )
                for j in range(b)
            ]
            batch = self.conditioner.micro_batch(mine, draws)
            self.runner.micro_step(batch, scaler.scale)
            clips.extend(f"{s.path}@{s.start}" for s in mine)
            samples_seen += b * self.world
        lr = learning_rate(step, t.scheduler, total)
        out = self.runner.step(lr, scaler.scale)
        scaler.update(out.finite)
        return out, lr, clips, samples_seen

    def _append_log_row(
        self,
        log_path: Path,
        step: int,
        out: Any,
        lr: float,
        seconds: float,
        samples_seen: int,
        clips: List[str],
    ) -> None:
        with open(log_path, "a", encoding="utf-8", newline="") as fh:
            csv.DictWriter(fh, fieldnames=LOG_COLUMNS).writerow(
                {
                    "step": step,
                    "epoch": self.dataset.position[0],
                    "loss": repr(out.loss),
                    "lr": repr(lr),
                    "grad_norm": repr(out.grad_norm),
                    "loss_scale": repr(out.loss_scale),
                    "applied": int(out.applied),
                    "seconds": f"{seconds:.4f}",
                    "samples_seen": samples_seen,
                    "clips": ";".join(clips),
                }
            )

    def _save(
        self, step: int, total: int, samples_seen: int, scaler: Any, loss: float
    ) -> Optional[Path]:
        if self.rank != 0:
            return None
        started = time.perf_counter()
        path = ckpt.write_checkpoint(
            self.out,
            step,
            self.model_cfg,
            self.unet.parameters_and_names(),
            self.source_weights,
            self._full_names(),
            self.runner.optimizer,
            self._state(step, total, samples_seen, scaler, loss),
        )
        # frozen weights are copied from the newest checkpoint from now on, so pruning old
        # ones never removes the file they are read from
        self.source_weights = path / WEIGHTS_FILE
        for old in ckpt.prune_checkpoints(self.out, self.cfg.train.ckpt_max_keep):
            logger.info("removed old checkpoint %s", old.name)
        logger.info("checkpoint %s written in %.1f s", path, time.perf_counter() - started)
        return path
