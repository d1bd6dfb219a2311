"""``svd-train``: the click layer over :class:`svdeploy.train.trainer.Trainer`."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Tuple

import click

from svdeploy.cliutil import friendly_errors, run_program

if TYPE_CHECKING:  # pragma: no cover
    from svdeploy.config import ModelConfig

    from .config import TrainingConfig
    from .trainer import TrainResult

EPILOG_HEAD = """\b
Every key of the training config can be overridden as --section.key VALUE (or
--section.key=VALUE); values are read as YAML (3, 1e-5, true, null, [0.9, 0.98]).
An unknown key or a value of the wrong type is an error naming the key.
\b
Options of the training config (svd_train.yaml):"""


def _epilog() -> str:
    from .config import format_options_help

    lines = format_options_help().splitlines()
    return (
        EPILOG_HEAD
        + "\n\b\n"
        + "\n".join(f"  {line}" for line in lines)
        + """
\b
Examples:
  svd-train --config configs/svd_train.yaml --svd-config svd --train.pretrained ckpt/svd \\
      --train.output_dir runs/cats --train.dataset.init_args.data_dir data/cats \\
      --train.dataset.init_args.metadata data/cats/labels.csv
  svd-train ... --resume              # continue from runs/cats/checkpoints/step-N
  msrun --worker_num 8 --local_worker_num 8 --master_port 8118 --log_dir msrun_log \\
      svd-train ... --environment.distributed true        # data parallel (docs/TRAINING.md)"""
    )


class _TrainCommand(click.Command):
    """Builds the option table for --help only when help is shown (it imports the config)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self.epilog = _epilog()
        super().format_epilog(ctx, formatter)


@click.command(
    name="svd-train",
    cls=_TrainCommand,
    context_settings={
        "help_option_names": ["-h", "--help"],
        "ignore_unknown_options": True,
        "allow_extra_args": True,
    },
)
@click.option(
    "--config",
    "config",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Training config YAML (default: the packaged configs/svd_train.yaml).",
)
@click.option(
    "--svd-config",
    "svd_config",
    default=None,
    metavar="PRESET_OR_YAML",
    help="Model config: a preset (svd, svd_xt, tiny, mid) or a YAML file. Default: the "
    "config.yaml of train.pretrained (or of the checkpoint resumed). Required with "
    "train.random_init. Must describe the same networks as the checkpoint.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue from the newest complete checkpoint under train.output_dir "
    "(weights, optimizer state, step, data position, loss scale); starts from "
    "train.pretrained when there is none yet. Without it, an output_dir that "
    "already holds checkpoints is refused.",
)
@click.option(
    "--print-config",
    is_flag=True,
    help="Print the resolved training config (file + overrides) as YAML and exit.",
)
@click.option(
    "--progress/--no-progress",
    default=True,
    show_default=True,
    help="Show a progress bar (loss, s/step, ETA).",
)
@click.pass_context
@friendly_errors
def main(
    ctx: click.Context,
    config: Optional[Path],
    svd_config: Optional[str],
    resume: bool,
    print_config: bool,
    progress: bool,
) -> None:
    """Fine-tune Stable Video Diffusion on your videos (image-to-video, EDM loss, MindSpore).

    Reads the training config, applies the --section.key overrides listed below, starts from
    train.pretrained (a checkpoint directory written by svd-convert) and writes checkpoints to
    train.output_dir/checkpoints/step-NNNNNNNN every train.save_ckpt_interval steps and after
    the last one. Each checkpoint is a checkpoint directory (config.yaml + weights.safetensors)
    that `svd-export --checkpoint` takes as is; it also holds the optimizer and trainer state for
    --resume. Losses go to train.output_dir/train_log.csv.
    """
    import yaml

    from svdeploy.config import load_model_config, to_dict

    from .config import parse_override_args

    overrides = parse_override_args(ctx.args)
    model_cfg = load_model_config(svd_config) if svd_config else None
    cfg, resolved = _training_config(config, overrides, model_cfg, resume)
    if print_config:
        click.echo(yaml.safe_dump(to_dict(cfg), sort_keys=False), nl=False)
        return
    result, rank = _train(cfg, model_cfg, resolved, resume, progress)
    if rank == 0:
        _report(result)


def _training_config(
    config: Optional[Path],
    overrides: Sequence[Tuple[str, Any]],
    model_cfg: Optional["ModelConfig"],
    resume: bool,
) -> Tuple["TrainingConfig", "ModelConfig"]:
    """(training config, model config): without --svd-config the model's config is read from
    the checkpoint training starts from, and the training config resolved again with it, as
    the clip size defaults to the model's."""
    from svdeploy.errors import ConfigError
    from svdeploy.models.loading import read_checkpoint_dir

    from . import checkpoint as ckpt
    from .config import load_training_config

    cfg = load_training_config(config, overrides, model_cfg)
    resolved = model_cfg
    if resolved is None:
        # the clip size defaults to the model's, so read the model config and resolve again
        latest = ckpt.latest_checkpoint(cfg.train.output_dir) if resume else None
        source = latest or (Path(cfg.train.pretrained) if cfg.train.pretrained else None)
        if source is None:
            raise ConfigError("train.random_init needs --svd-config (the networks to build)")
        resolved, _ = read_checkpoint_dir(source)
        cfg = load_training_config(config, overrides, resolved)
    return cfg, resolved


def _train(
    cfg: "TrainingConfig",
    model_cfg: Optional["ModelConfig"],
    resolved: "ModelConfig",
    resume: bool,
    progress: bool,
) -> Tuple["TrainResult", int]:
    """(result, this process's rank): logging goes through tqdm so that the bars stay whole."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .trainer import Trainer, setup_environment

    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)
    rank, world = setup_environment(cfg, resolved)
    with logging_redirect_tqdm():
        trainer = Trainer(
            cfg, model_cfg, resume=resume, progress=progress, rank=rank, world_size=world
        )
        result = trainer.train()
    return result, rank


def _report(result: "TrainResult") -> None:
    """The run in up to three lines (rank 0 only); the first step, slower than the others, is
    told apart from their mean."""
    times = result.step_seconds[1:] or result.step_seconds
    mean = sum(times) / len(times) if times else float("nan")
    click.echo(
        f"trained steps {result.start_step} → {result.steps} of {result.total_steps}"
        f"{f'; last loss {result.losses[-1]:.6g}' if result.losses else ''}"
    )
    if result.step_seconds:
        click.echo(
            f"time: graph compile {result.compile_seconds:.1f} s, then "
            f"{result.step_seconds[0]:.2f} s for the first step and {mean:.3f} s/step "
            "after it"
        )
    if result.last_checkpoint is not None:
        click.echo(f"checkpoint: {result.last_checkpoint}")


if __name__ == "__main__":
    run_program(main)
