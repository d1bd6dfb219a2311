"""svd-train's autoencoder stage resumes: an interrupted stage goes on from its last snapshot
(OUT.progress) and ends with the weights, scale and log of a run that was never stopped."""

from __future__ import annotations

import csv
import json
import logging
import subprocess
from pathlib import Path

import mindspore as ms
import pytest

from svdeploy.config import load_model_config
from svdeploy.demo_model import recipe_path
from svdeploy.errors import CheckpointError
from svdeploy.train import autoencoder
from svdeploy.train.autoencoder import (
    DONE_FILE,
    LOG_FILE,
    PROGRESS_CELL,
    PROGRESS_STATE,
    Snapshots,
    progress_dir,
    train_autoencoder,
)
from svdeploy.train.config import load_training_config, parse_override_args
from svdeploy.train.shapes import synthesize
from svdeploy.train.trainer import training_kernels, write_random_checkpoint

# 3 joint and 3 decoder-only steps of one 4-frame 32×32 clip; a snapshot after steps 2 of each
STAGE = {
    "--train.autoencoder.steps": "3",
    "--train.autoencoder.decoder_steps": "3",
    "--train.autoencoder.warmup_steps": "1",
    "--train.autoencoder.batch_size": "1",
    "--train.autoencoder.scale_samples": "2",
    "--train.save_ckpt_interval": "2",
    "--train.dataset.init_args.frames": "4",
    "--train.dataset.init_args.height": "32",
    "--train.dataset.init_args.width": "32",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("ae_resume")
    data = synthesize(root / "data", clips=3, frames=4, seed=5, progress=False)
    model_cfg = load_model_config("tiny")
    source = write_random_checkpoint(model_cfg, root / "random_init", seed=0)
    return data, model_cfg, source


@pytest.fixture
def pynative():
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=previous)


def _config(data: Path, model_cfg, **changes):
    options = {
        **STAGE,
        "--train.dataset.init_args.data_dir": str(data),
        "--train.dataset.init_args.metadata": str(data / "labels.csv"),
        **changes,
    }
    args = [part for pair in options.items() for part in pair]
    return load_training_config(recipe_path(), parse_override_args(args), model_cfg)


def _stop_before_step(monkeypatch, step: int) -> None:
    """Interrupt the stage as Ctrl-C would, before its ``step``-th step (counted from 1)."""
    calls = []

    def check():
        calls.append(1)
        if len(calls) == step:
            raise KeyboardInterrupt("test")

    monkeypatch.setattr(autoencoder, "raise_if_interrupted", check)


def _log(out: Path):
    with open(out / LOG_FILE, encoding="utf-8") as fh:
        return [(r["phase"], r["step"], r["loss"]) for r in csv.DictReader(fh)]


@pytest.mark.slow
def test_an_interrupted_stage_goes_on_from_its_snapshot_to_the_same_result(
    world, pynative, tmp_path, monkeypatch
):
    data, model_cfg, source = world
    cfg = _config(data, model_cfg)
    kernels = training_kernels("auto")
    whole = train_autoencoder(cfg, model_cfg, source, tmp_path / "whole" / "ae", kernels, False)

    out = tmp_path / "stopped" / "ae"
    progress = progress_dir(out)
    _stop_before_step(monkeypatch, 3)  # the joint phase's last step: its step-2 snapshot stays
    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(cfg, model_cfg, source, out, kernels, False)
    state = json.loads((progress / "progress.json").read_text())
    assert (state["phase"], state["step"], len(state["rows"])) == (0, 2, 2)
    _stop_before_step(monkeypatch, 4)  # joint 3, decoder 1 and 2 run: the decoder's snapshot
    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(cfg, model_cfg, source, out, kernels, False)
    state = json.loads((progress / "progress.json").read_text())
    assert (state["phase"], state["step"], len(state["rows"])) == (1, 2, 5)
    assert not (out / DONE_FILE).exists()
    monkeypatch.undo()
    resumed = train_autoencoder(cfg, model_cfg, source, out, kernels, False)

    assert not progress.exists()  # the snapshot goes once the stage is written
    for name in ("weights.safetensors", "config.yaml"):  # config.yaml holds the latent scale
        assert (resumed / name).read_bytes() == (whole / name).read_bytes(), name
    assert _log(resumed) == _log(whole) and len(_log(whole)) == 6


@pytest.mark.slow
def test_a_snapshot_made_with_other_options_is_not_used(
    world, pynative, tmp_path, monkeypatch, caplog
):
    data, model_cfg, source = world
    kernels = training_kernels("auto")
    out = tmp_path / "ae"
    progress = progress_dir(out)
    _stop_before_step(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(_config(data, model_cfg), model_cfg, source, out, kernels, False)
    assert (progress / "progress.json").is_file()
    monkeypatch.undo()
    other = _config(data, model_cfg, **{"--train.autoencoder.object_weight": "1.5"})
    with caplog.at_level(logging.INFO, logger=autoencoder.__name__):
        train_autoencoder(other, model_cfg, source, out, kernels, False)
    assert "was made with other options" in caplog.text and "going on from" not in caplog.text
    assert [(phase, step) for phase, step, _ in _log(out)] == [
        (phase, str(step)) for phase in ("joint", "decoder") for step in (1, 2, 3)
    ]
    assert not progress.exists()


@pytest.mark.parametrize(
    "text, says",
    [
        ("{not json", "unreadable autoencoder progress"),
        ("[1, 2]", "unreadable autoencoder progress"),
        ('{"options": {"seed": 0}, "phase": 0, "bogus": 1}', "not an autoencoder progress file"),
    ],
)
def test_a_damaged_snapshot_is_refused_with_the_file_and_the_way_out(tmp_path, text, says):
    folder = tmp_path / "autoencoder.progress"
    folder.mkdir()
    (folder / PROGRESS_STATE).write_text(text, "utf-8")
    with pytest.raises(CheckpointError) as err:
        Snapshots(folder, {"seed": 0}, every=2).load()
    message = str(err.value)
    assert says in message and str(folder / PROGRESS_STATE) in message
    assert f"delete {folder}" in message and folder.is_dir()  # nothing removed behind the user


class _Position:
    def state_dict(self):
        return {"position": 1}


def test_a_half_written_snapshot_of_a_killed_run_is_removed_at_the_next_save(tmp_path):
    """A stage killed while saving leaves a hidden partial folder; the next save removes it
    (the project's staged_dir) and writes the new snapshot whole."""
    folder = tmp_path / "autoencoder.progress"
    gone = subprocess.Popen(["true"])
    gone.wait()  # a process that no longer exists wrote this one
    stale = tmp_path / f".{folder.name}.partial-{gone.pid}-x1"
    stale.mkdir()
    (stale / PROGRESS_STATE).write_text("{", "utf-8")
    snapshots = Snapshots(folder, {"seed": 0}, every=1)
    phase = autoencoder.Phase(autoencoder.JOINT, 3, 3.0, 7)
    before = autoencoder.StageProgress(scale=0.5)
    snapshots.save(ms.nn.Dense(2, 2), phase, before, _Position(), 1, [{"step": 1}])
    assert not stale.exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted([PROGRESS_STATE, PROGRESS_CELL])
    state = snapshots.load()
    assert state is not None and (state.step, state.dataset, state.scale) == (
        1,
        {"position": 1},
        0.5,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]
