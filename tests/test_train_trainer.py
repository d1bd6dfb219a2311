"""svd-train end to end in GRAPH_MODE on a micro model (the tiny preset with a one-level U-Net)
and synthetic videos: overfitting one clip, temporal_only, gradient accumulation, checkpoints."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, List

import mindspore as ms
import numpy as np
import pytest

from svdeploy.config import load_model_config, model_config_from_dict, save_model_config, to_dict
from svdeploy.models import NETWORK_NAMES, load_network
from svdeploy.models.keys import NETWORK_PREFIXES, network_of
from svdeploy.models.loading import read_checkpoint_dir
from svdeploy.models.weights_io import SafetensorsFile
from svdeploy.train import checkpoint as ckpt
from svdeploy.train.config import load_training_config
from svdeploy.train.step import is_temporal
from svdeploy.train.trainer import LOG_FILE, RANDOM_INIT_DIR, Trainer, read_log
from svdref.videos import moving_square_frames, write_labels, write_video

SIZE = 16  # clip height and width: 8×8 latents


@pytest.fixture(scope="module", autouse=True)
def graph_mode():
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=previous)


def micro_config():
    """tiny with a single U-Net level: same blocks (temporal res block, spatio-temporal
    transformer), a third of the graph to compile."""
    data = to_dict(load_model_config("tiny"))
    data.update(variant="micro", height=SIZE, width=SIZE)
    data["unet"]["channel_mult"] = [1]
    return model_config_from_dict(data)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train_videos")
    for i, speed in enumerate((2.0, 3.0)):
        write_video(
            root / f"v{i}.mp4", moving_square_frames(20, 32, 32, speed, square=10, seed=i), 8
        )
    write_labels(root / "one.csv", [("v0.mp4", 20, 100)])
    write_labels(root / "two.csv", [("v0.mp4", 20, 100), ("v1.mp4", 20, 180)])
    return root


def make_config(videos: Path, out: Path, labels: str, **overrides):
    base = {
        "train.random_init": True,
        "train.output_dir": str(out),
        "train.dataset.init_args.data_dir": str(videos),
        "train.dataset.init_args.metadata": str(videos / labels),
        "train.dataset.init_args.step": 2,
        "train.dataloader.shuffle": False,
        "train.settings.gradient_accumulation_steps": 1,
        "train.scheduler.warmup_steps": 0,
        "train.scheduler.name": "constant",
        "train.scheduler.lr": 1e-3,
        "train.ckpt_max_keep": None,
    }
    base.update(overrides)
    return load_training_config(None, list(base.items()), micro_config())


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def run(cfg):
    handler = Records()
    log = logging.getLogger("svdeploy.train")
    log.addHandler(handler)
    old_level = log.level
    log.setLevel(logging.INFO)
    try:
        result = Trainer(cfg, micro_config(), progress=False).train()
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
    return result, handler.messages


def read_all(path: Path) -> Dict[str, np.ndarray]:
    with SafetensorsFile(path) as f:
        return {name: f.read_float32(name) for name in f.infos}


# ---- overfitting one clip -----------------------------------------------------------------------
OVERFIT_STEPS = 30


@pytest.fixture(scope="module")
def overfit(videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("overfit")
    # One clip, one noise level (σ = e^-1), full U-Net, no clipping: the denoiser can memorise it.
    cfg = make_config(
        videos,
        out,
        "one.csv",
        **{
            "train.max_steps": OVERFIT_STEPS,
            "train.temporal_only": False,
            "train.scheduler.lr": 1e-2,
            "train.settings.clip_grad": False,
            "train.diffusion.p_mean": -1.0,
            "train.diffusion.p_std": 0.0,
            "train.diffusion.conditioning_dropout": 0.0,
            "train.save_ckpt_interval": 1000,
        },
    )
    return run(cfg)


@pytest.mark.slow
def test_tiny_model_overfits_one_clip(overfit):
    result, _ = overfit
    losses = result.losses
    print("overfit loss curve:", " ".join(f"{x:.4f}" for x in losses))
    assert len(losses) == OVERFIT_STEPS and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) * 5 <= losses[0], losses
    # the CSV log holds the same curve
    logged = [float(r["loss"]) for r in read_log(result.output_dir / LOG_FILE)]
    assert logged == pytest.approx(losses, rel=1e-12)
    assert result.steps == OVERFIT_STEPS and result.compile_seconds > 0


@pytest.mark.slow
def test_final_checkpoint_loads_with_load_network(overfit):
    result, _ = overfit
    # the interval (1000) is never reached: only the final checkpoint exists
    assert [step for step, _ in ckpt.list_checkpoints(result.output_dir)] == [OVERFIT_STEPS]
    directory = result.last_checkpoint
    assert directory == result.output_dir / "checkpoints" / f"step-{OVERFIT_STEPS:08d}"
    cfg, _ = read_checkpoint_dir(directory)
    assert to_dict(cfg) == to_dict(micro_config())
    for name in NETWORK_NAMES:
        net = load_network(name, directory)
        assert sum(1 for _ in net.parameters_and_names()) > 0
    trained = load_network("unet", directory)
    weights = read_all(directory / "weights.safetensors")
    for name, param in trained.parameters_and_names():
        np.testing.assert_array_equal(param.asnumpy(), weights[NETWORK_PREFIXES["unet"] + name])
    state = json.loads((directory / ckpt.STATE_FILE).read_text())
    assert state["step"] == OVERFIT_STEPS and state["samples_seen"] == OVERFIT_STEPS
    assert state["train_config"]["train"]["max_steps"] == OVERFIT_STEPS
    assert not list((result.output_dir / "checkpoints").glob(".*"))  # no partial folders


# ---- gradient accumulation and temporal_only -----------------------------------------------------
@pytest.fixture(scope="module")
def accumulation(videos, tmp_path_factory):
    """One optimizer step over the same two clips: 2 micro-batches of 1 vs 1 batch of 2.

    Adam's first update is lr·g/(|g| + ε) elementwise: with the default ε = 1e-8 it turns the
    float32 noise of gradients that are exactly zero in theory (e.g. a bias right before a
    GroupNorm of one channel per group) into steps of any size, so this comparison uses ε = 1e-4.
    """
    runs = {}
    for name, k, b in (("micro2x1", 2, 1), ("batch1x2", 1, 2)):
        out = tmp_path_factory.mktemp(name)
        cfg = make_config(
            videos,
            out,
            "two.csv",
            **{
                "train.max_steps": 1,
                "train.settings.gradient_accumulation_steps": k,
                "train.dataloader.batch_size": b,
                "train.save_ckpt_interval": 1,
                "train.optimizer.eps": 1e-4,
            },
        )
        runs[name] = run(cfg)
    return runs


@pytest.mark.slow
def test_gradient_accumulation_equals_one_step_of_the_mean_gradient(accumulation):
    (acc, _), (batch, _) = accumulation["micro2x1"], accumulation["batch1x2"]
    init_a = read_all(acc.output_dir / RANDOM_INIT_DIR / "weights.safetensors")
    init_b = read_all(batch.output_dir / RANDOM_INIT_DIR / "weights.safetensors")
    assert all(np.array_equal(init_a[n], init_b[n]) for n in init_a)  # same start
    # the optimizer's first moment after one step is (1 − β1) × the mean gradient
    opt_a = read_all(acc.last_checkpoint / ckpt.OPTIMIZER_FILE)
    opt_b = read_all(batch.last_checkpoint / ckpt.OPTIMIZER_FILE)
    assert opt_a.keys() == opt_b.keys()
    first = [n for n in opt_a if n.startswith("exp_avg.")]
    largest = max(float(np.abs(opt_a[n]).max()) for n in first)
    assert largest > 0
    for name in first:
        np.testing.assert_allclose(
            opt_a[name], opt_b[name], rtol=0, atol=1e-5 * largest, err_msg=name
        )
    after_a = read_all(acc.last_checkpoint / "weights.safetensors")
    after_b = read_all(batch.last_checkpoint / "weights.safetensors")
    moved = 0
    for name in after_a:
        np.testing.assert_allclose(after_a[name], after_b[name], rtol=1e-6, atol=1e-7, err_msg=name)
        moved += not np.array_equal(after_a[name], init_a[name])
    assert moved > 100  # the step did something
    log_a, log_b = read_log(acc.output_dir / LOG_FILE), read_log(batch.output_dir / LOG_FILE)
    assert float(log_a[0]["loss"]) == pytest.approx(float(log_b[0]["loss"]), rel=1e-5)
    assert float(log_a[0]["grad_norm"]) == pytest.approx(float(log_b[0]["grad_norm"]), rel=1e-5)
    clips = log_a[0]["clips"].split(";")
    assert log_a[0]["clips"] == log_b[0]["clips"]
    assert [c.split("@")[0] for c in clips] == ["v0.mp4", "v1.mp4"]


@pytest.mark.slow
def test_temporal_only_keeps_every_spatial_weight_bit_identical(accumulation):
    result, messages = accumulation["micro2x1"]
    before = read_all(result.output_dir / RANDOM_INIT_DIR / "weights.safetensors")
    after = read_all(result.last_checkpoint / "weights.safetensors")
    assert before.keys() == after.keys()
    unet = NETWORK_PREFIXES["unet"]
    frozen = [n for n in before if not (n.startswith(unet) and is_temporal(n[len(unet) :]))]
    temporal = [n for n in before if n not in frozen]
    assert {network_of(n) for n in frozen} == set(NETWORK_NAMES)
    for name in frozen:
        assert before[name].tobytes() == after[name].tobytes(), name
    # every temporal tensor moved, unless its gradient is zero up to float32 noise (biases
    # right before a GroupNorm with one channel per group, which have no weight decay)
    opt = read_all(result.last_checkpoint / ckpt.OPTIMIZER_FILE)
    largest = max(float(np.abs(opt["exp_avg." + n]).max()) for n in temporal)
    unchanged = [n for n in temporal if np.array_equal(before[n], after[n])]
    assert len(unchanged) < len(temporal) // 4
    for name in unchanged:
        assert float(np.abs(opt["exp_avg." + name]).max()) < 1e-6 * largest, name
    counts = result.counts
    assert counts.trainable_tensors == len(temporal)
    assert counts.trainable == sum(before[n].size for n in temporal)
    assert counts.frozen == sum(before[n].size for n in frozen)
    assert any(
        f"trainable parameters: {counts.trainable:,} in {len(temporal)} tensors; frozen: "
        f"{counts.frozen:,}" in m
        for m in messages
    ), messages
    assert {n.split(".", 1)[1] for n in opt if n.startswith("exp_avg.")} == set(temporal)


def test_an_output_dir_with_checkpoints_is_not_reused_without_resume(videos, tmp_path):
    from svdeploy.errors import ConfigError

    out = tmp_path / "run"
    (out / "checkpoints" / "step-00000002").mkdir(parents=True)
    (out / "checkpoints" / "step-00000002" / ckpt.STATE_FILE).write_text("{}")
    (out / "checkpoints" / ".step-00000004.abc.partial").mkdir()  # an earlier version's name
    (out / "checkpoints" / ".step-00000006.partial-999999-xyz").mkdir()  # fsutil's
    cfg = make_config(videos, out, "one.csv", **{"train.max_steps": 1})
    with pytest.raises(ConfigError, match="already holds checkpoints.*--resume"):
        Trainer(cfg, micro_config(), progress=False)
    assert not (out / "checkpoints" / ".step-00000004.abc.partial").exists()  # cleaned up
    assert not (out / "checkpoints" / ".step-00000006.partial-999999-xyz").exists()
    assert (out / "checkpoints" / "step-00000002").is_dir()  # kept


# ---- data parallel through msrun ----------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_msrun_two_cpu_workers_average_gradients(accumulation, videos, tmp_path):
    """DATA_PARALLEL over 2 CPU processes started by msrun, one clip each, equals one process
    with a batch of the same 2 clips: the gradients were averaged across the workers."""
    import os
    import subprocess
    import sys

    batch, _ = accumulation["batch1x2"]
    bin_dir = Path(sys.executable).parent
    model_yaml = tmp_path / "micro.yaml"
    save_model_config(micro_config(), model_yaml)
    out, logs = tmp_path / "dp", tmp_path / "msrun_log"
    overrides = {
        "train.random_init": "true",
        "train.output_dir": str(out),
        "train.dataset.init_args.data_dir": str(videos),
        "train.dataset.init_args.metadata": str(videos / "two.csv"),
        "train.dataset.init_args.step": "2",
        "train.dataloader.shuffle": "false",
        "train.settings.gradient_accumulation_steps": "1",
        "train.scheduler.warmup_steps": "0",
        "train.scheduler.name": "constant",
        "train.scheduler.lr": "1e-3",
        "train.ckpt_max_keep": "null",
        "train.max_steps": "1",
        "train.dataloader.batch_size": "1",
        "train.save_ckpt_interval": "1",
        "train.optimizer.eps": "1e-4",
        "environment.distributed": "true",
    }
    cmd = [
        str(bin_dir / "msrun"),
        "--worker_num",
        "2",
        "--local_worker_num",
        "2",
        "--master_port",
        str(_free_port()),
        "--log_dir",
        str(logs),
        "--join",
        "True",
        "--cluster_time_out",
        "300",
        str(bin_dir / "svd-train"),
        "--svd-config",
        str(model_yaml),
        "--no-progress",
    ]
    for key, value in overrides.items():
        cmd += [f"--{key}", value]
    # msrun starts each worker as `python SCRIPT ...`: the environment's python must come first
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=500
    )
    worker_logs = "\n".join(
        p.read_text(errors="replace")[-2000:] for p in sorted(logs.glob("worker_*.log"))
    )
    assert done.returncode == 0, done.stdout.decode(errors="replace")[-2000:] + worker_logs
    assert "1 micro-batch(es) × 1 clip(s) × 2 worker(s)" in worker_logs
    dp_rows, batch_rows = read_log(out / LOG_FILE), read_log(batch.output_dir / LOG_FILE)
    assert dp_rows[0]["clips"] == "v0.mp4@" + batch_rows[0]["clips"].split(";")[0].split("@")[1]
    assert float(dp_rows[0]["loss"]) == pytest.approx(float(batch_rows[0]["loss"]), rel=1e-5)
    assert float(dp_rows[0]["grad_norm"]) == pytest.approx(
        float(batch_rows[0]["grad_norm"]), rel=1e-5
    )
    dp_final = out / "checkpoints" / "step-00000001"
    opt_dp = read_all(dp_final / ckpt.OPTIMIZER_FILE)
    opt_b = read_all(batch.last_checkpoint / ckpt.OPTIMIZER_FILE)
    largest = max(float(np.abs(opt_b[n]).max()) for n in opt_b if n.startswith("exp_avg."))
    for name in opt_b:
        if name.startswith("exp_avg."):
            np.testing.assert_allclose(
                opt_dp[name], opt_b[name], rtol=0, atol=1e-5 * largest, err_msg=name
            )
    after_dp = read_all(dp_final / "weights.safetensors")
    after_b = read_all(batch.last_checkpoint / "weights.safetensors")
    for name in after_b:
        np.testing.assert_allclose(
            after_dp[name], after_b[name], rtol=1e-6, atol=1e-7, err_msg=name
        )
