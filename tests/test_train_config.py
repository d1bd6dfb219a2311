"""svd-train configuration: the packaged YAML, dotted overrides, validation, --help, and the
analytic parameter counts."""

from __future__ import annotations

import re

import pytest
import yaml
from click.testing import CliRunner

from svdeploy.config import from_dict, load_model_config, read_yaml, to_dict
from svdeploy.errors import ConfigError
from svdeploy.train.cli import main
from svdeploy.train.config import (
    TrainingConfig,
    apply_overrides,
    default_config_path,
    iter_options,
    load_training_config,
    parse_override_args,
    training_config_from_dict,
)
from svdeploy.train.step import is_temporal
from svdeploy.train.trainer import count_parameters

REQUIRED = [
    "--train.random_init",
    "true",
    "--train.dataset.init_args.data_dir",
    "videos",
    "--train.dataset.init_args.metadata",
    "videos/labels.csv",
]


def _load(args, model=None):
    return load_training_config(None, parse_override_args(REQUIRED + list(args)), model)


def test_packaged_yaml_is_the_seed_recipe_and_the_defaults():
    raw = read_yaml(default_config_path())
    cfg = _load([])
    t = cfg.train
    # DESIGN.md §7: temporal only, 4 frames every 5, batch 1, accumulation 5, AdamW (0.9, 0.98)
    # wd 0.01, cosine 5e-6 → 1e-7 after 50 warm-up steps, clipping at 1.0
    assert t.temporal_only and (t.dataset.init_args.frames, t.dataset.init_args.step) == (4, 5)
    assert t.dataloader.batch_size == 1 and t.settings.gradient_accumulation_steps == 5
    assert t.optimizer.name == "adamw" and t.optimizer.betas == (0.9, 0.98)
    assert t.optimizer.weight_decay == 0.01
    assert (t.scheduler.name, t.scheduler.lr, t.scheduler.end_lr, t.scheduler.warmup_steps) == (
        "cosine_decay",
        5e-6,
        1e-7,
        50,
    )
    assert t.settings.clip_grad and t.settings.clip_norm == 1.0
    assert (t.diffusion.p_mean, t.diffusion.p_std) == (1.0, 1.6)
    # every value the file sets equals the dataclass default, so --help's defaults are true
    defaults = to_dict(TrainingConfig())
    file_values = to_dict(
        training_config_from_dict(apply_overrides(raw, parse_override_args(REQUIRED)))
    )
    for name, _, default, _ in iter_options():
        if name in (
            "train.random_init",
            "train.dataset.init_args.data_dir",
            "train.dataset.init_args.metadata",
        ):
            continue
        node_d, node_f = defaults, file_values
        for part in name.split("."):
            node_d, node_f = node_d[part], node_f[part]
        assert node_f == node_d, name


def test_overrides_are_typed_by_the_key():
    cfg = _load(
        [
            "--train.epochs",
            "3",
            "--train.output_dir",
            "2024",
            "--train.optimizer.betas",
            "[0.8, 0.9]",
            "--train.scheduler.lr=1e-4",
            "--train.max_steps",
            "null",
            "--train.temporal_only",
            "false",
            "--environment.mode",
            "1",
            "--train.dataset.init_args.frames",
            "8",
            "--train.dataset.init_args.step",
            "2",
        ]
    )
    t = cfg.train
    assert t.epochs == 3 and t.output_dir == "2024" and t.optimizer.betas == (0.8, 0.9)
    assert t.scheduler.lr == 1e-4 and t.max_steps is None and t.temporal_only is False
    assert cfg.environment.mode == 1
    assert (t.dataset.init_args.frames, t.dataset.init_args.step) == (8, 2)
    assert t.dataset.init_args.data_dir == "videos"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--train.epoch", "3"], "--train.epoch: unknown option; train has keys epochs"),
        (
            ["--train.dataset.init_args.framez", "2"],
            "--train.dataset.init_args.framez: unknown option; train.dataset.init_args has keys",
        ),
        (["--trian.epochs", "2"], "--trian.epochs: unknown option; the top level has keys"),
        (["--train.epochs", "abc"], "train.epochs = 'abc': expected an integer"),
        (
            ["--train.temporal_only", "yes please"],
            "train.temporal_only = 'yes please': expected true or false",
        ),
        (["--train.scheduler.lr", "fast"], "train.scheduler.lr = 'fast': expected a number"),
        (["--train.dataset.init_args.frames", "0"], "train.dataset.init_args.frames = 0"),
        (["--train.dataset", "x"], "--train.dataset names a section"),
        (
            ["--train.epochs.value", "1"],
            "--train.epochs.value: unknown option (train.epochs is a value",
        ),
        (["--environment.mode", "2"], "environment.mode = 2: expected 0 (GRAPH_MODE) or 1"),
        (["--train.compute_dtype", "fp8"], "train.compute_dtype = 'fp8': expected one of"),
        (
            ["--train.diffusion.conditioning_dropout", "1.5"],
            "train.diffusion.conditioning_dropout = 1.5",
        ),
        (["--train.pretrained", "ckpt"], "train.random_init = true and train.pretrained = 'ckpt'"),
        (
            ["--train.autoencoder.object_weight", "-1"],
            "train.autoencoder.object_weight = -1.0: expected a number ≥ 0",
        ),
        (
            ["--train.autoencoder.decoder_object_weight", "nan"],
            "train.autoencoder.decoder_object_weight = nan: expected a number ≥ 0",
        ),
        (
            ["--train.autoencoder.decoder_steps", "-2"],
            "train.autoencoder.decoder_steps = -2: expected an integer ≥ 0",
        ),
        (["--train.epochs"], "--train.epochs: missing value"),
        (["epochs"], "unexpected argument 'epochs'"),
    ],
)
def test_bad_overrides_name_the_dotted_key(args, message):
    with pytest.raises(ConfigError) as info:
        _load(args)
    assert message in str(info.value)


def test_pretrained_or_random_init_is_required():
    with pytest.raises(ConfigError, match="train.pretrained is not set"):
        load_training_config(None, parse_override_args(REQUIRED[2:]))


def test_clip_size_defaults_to_the_model_and_is_checked():
    tiny = load_model_config("tiny")
    cfg = _load([], tiny)
    assert (cfg.train.dataset.init_args.height, cfg.train.dataset.init_args.width) == (64, 64)
    cfg = _load(["--train.dataset.init_args.height", "32"], tiny)
    assert (cfg.train.dataset.init_args.height, cfg.train.dataset.init_args.width) == (32, 64)
    with pytest.raises(
        ConfigError, match=r"train.dataset.init_args.height = 30: must be a positive multiple of 4"
    ):
        _load(["--train.dataset.init_args.height", "30"], tiny)


def test_dataloader_shuffle_sets_the_dataset_shuffle():
    assert _load(["--train.dataloader.shuffle", "false"]).train.dataset.init_args.shuffle is False
    assert (
        _load(
            ["--train.dataloader.shuffle", "null", "--train.dataset.init_args.shuffle", "false"]
        ).train.dataset.init_args.shuffle
        is False
    )


def test_seed_layout_reads_with_the_seed_class_path(tmp_path):
    """mindone's svd_train.yaml sections and names are accepted (keys it has and we lack, like
    sink_size, are refused by name)."""
    seed_like = {
        "environment": {"mode": 0, "seed": 42, "distributed": False},
        "train": {
            "epochs": 1000,
            "temporal_only": True,
            "pretrained": "ckpt/svd",
            "output_dir": "output/",
            "dataset": {
                "class_path": "data.video_dataset.VideoDataset",
                "init_args": {"data_dir": "d", "metadata": "d/v.csv", "frames": 4, "step": 5},
            },
            "dataloader": {"batch_size": 1, "shuffle": True, "drop_remainder": True},
            "scheduler": {
                "name": "cosine_decay",
                "lr": 5.0e-6,
                "end_lr": 1.0e-7,
                "warmup_steps": 50,
            },
            "optimizer": {"name": "adamw", "betas": [0.9, 0.98], "weight_decay": 0.01},
            "settings": {
                "drop_overflow_update": False,
                "gradient_accumulation_steps": 5,
                "clip_grad": True,
                "clip_norm": 1.0,
            },
        },
        "LossScale": {"loss_scale_value": 1, "scale_factor": 2, "scale_window": 10},
    }
    path = tmp_path / "seed.yaml"
    path.write_text(yaml.safe_dump(seed_like))
    cfg = load_training_config(path)
    assert cfg.train.pretrained == "ckpt/svd" and cfg.LossScale.scale_window == 10
    seed_like["train"]["sink_size"] = -1
    path.write_text(yaml.safe_dump(seed_like))
    with pytest.raises(ConfigError, match="train: unknown key.*sink_size"):
        load_training_config(path)


# ---- CLI ------------------------------------------------------------------------------------
def test_help_lists_every_option_with_its_help():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    text = result.output
    for name, _, _, help_text in iter_options():
        assert f"--{name} (" in text, name
        assert help_text, f"{name} has no help text"
    for option in ("--config", "--svd-config", "--resume", "--print-config", "--progress"):
        assert option in text
    # every click option explains itself
    import click

    for param in main.params:
        if isinstance(param, click.Option) and param.name != "help":
            assert param.help, param.name


def test_cli_errors_are_one_line_naming_the_key(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "--svd-config",
            "tiny",
            "--print-config",
            *REQUIRED,
            "--train.dataset.init_args.framez",
            "3",
        ],
    )
    assert result.exit_code == 2
    assert result.output.strip().startswith(
        "error: --train.dataset.init_args.framez: unknown option"
    )
    result = runner.invoke(
        main,
        [
            "--svd-config",
            "tiny",
            "--print-config",
            *REQUIRED,
            "--train.settings.gradient_accumulation_steps",
            "two",
        ],
    )
    assert result.exit_code == 2
    assert (
        "train.settings.gradient_accumulation_steps = 'two': expected an integer" in result.output
    )
    result = runner.invoke(main, ["--svd-config", "nonesuch", "--print-config", *REQUIRED])
    assert result.exit_code == 2 and "nonesuch" in result.output


def test_print_config_shows_the_resolved_config():
    result = CliRunner().invoke(
        main,
        [
            "--svd-config",
            "tiny",
            "--print-config",
            *REQUIRED,
            "--train.epochs",
            "7",
            "--LossScale.scale_window=20",
        ],
    )
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(result.output)
    assert data["train"]["epochs"] == 7 and data["LossScale"]["scale_window"] == 20
    assert data["train"]["dataset"]["init_args"]["height"] == 64  # tiny's size
    assert from_dict(TrainingConfig, data) == _load(
        ["--train.epochs", "7", "--LossScale.scale_window=20"], load_model_config("tiny")
    )


# ---- parameter counts -------------------------------------------------------------------------
def test_analytic_counts_match_the_built_unet():
    from svdeploy.models import build_network

    cfg = load_model_config("tiny")
    unet = build_network("unet", cfg)
    temporal = sum(p.size for n, p in unet.parameters_and_names() if is_temporal(n))
    spatial = sum(p.size for n, p in unet.parameters_and_names() if not is_temporal(n))
    counts = count_parameters(cfg, temporal_only=True)
    assert (counts.trainable, counts.frozen_unet) == (temporal, spatial)
    assert temporal > 0 and spatial > 0
    full = count_parameters(cfg, temporal_only=False)
    assert full.trainable == temporal + spatial and full.frozen_unet == 0
    assert full.total == counts.total
    assert re.search(
        r"trainable parameters: [\d,]+ in \d+ tensors; frozen: [\d,]+", counts.summary()
    )


def test_svd_preset_counts_are_analytic():
    """The full-size model's split, without allocating it (reported in docs/TRAINING.md)."""
    counts = count_parameters(load_model_config("svd"), temporal_only=True)
    unet_total = counts.trainable + counts.frozen_unet
    assert 1.4e9 < unet_total < 1.6e9  # SVD's U-Net: about 1.52 B parameters
    assert 0.3 < counts.trainable / unet_total < 0.45


def test_compile_cache_folder_is_keyed_by_what_the_graphs_bake_in(tmp_path):
    from svdeploy.train.trainer import compile_cache_dir

    tiny = load_model_config("tiny")
    base = ["--train.output_dir", str(tmp_path)]
    key = compile_cache_dir(_load(base, tiny), tiny, 1)
    assert key.parent == tmp_path.resolve() / "compile_cache"
    assert (
        compile_cache_dir(
            _load(base + ["--train.epochs", "3", "--train.scheduler.lr", "1e-4"], tiny), tiny, 1
        )
        == key
    )  # not in any graph
    for change in (
        ["--train.dataset.init_args.frames", "6"],
        ["--train.temporal_only", "false"],
        ["--train.dataloader.batch_size", "2"],
        ["--train.optimizer.eps", "1e-6"],
        ["--train.compute_dtype", "fp16"],
    ):
        assert compile_cache_dir(_load(base + change, tiny), tiny, 1) != key, change
    assert compile_cache_dir(_load(base, tiny), tiny, 2) != key
    other = load_model_config("mid")
    assert (
        compile_cache_dir(
            _load(
                base
                + [
                    "--train.dataset.init_args.height",
                    "64",
                    "--train.dataset.init_args.width",
                    "64",
                ],
                other,
            ),
            other,
            1,
        )
        != key
    )
