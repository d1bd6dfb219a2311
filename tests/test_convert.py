"""svd-convert end to end: every source layout, identical output, strict errors, atomic output."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from svdeploy.config import load_model_config
from svdeploy.errors import CheckpointError, ConfigError
from svdeploy.models import convert as convert_module
from svdeploy.models.convert import convert_checkpoint
from svdeploy.models.keys import sgm_parameter_shapes
from svdeploy.models.loading import read_checkpoint_dir
from svdeploy.models.weights_io import SafetensorsFile
from svdref.checkpoints import (
    EXTRA_MINDONE_TENSORS,
    EXTRA_SGM_TENSORS,
    save_diffusers_folder,
    sgm_state_dict,
    write_mindone_ckpt,
    write_sgm_bf16_safetensors,
    write_sgm_safetensors,
    write_torch_checkpoint,
)
from svdref.diffusers_tiny import (
    TINY3_CLIP,
    TINY3_UNET,
    TINY3_VAE,
    TINY_CLIP,
    TINY_UNET,
    TINY_VAE,
    build_components,
)

MODELS = {"tiny": (TINY_UNET, TINY_VAE, TINY_CLIP), "tiny3": (TINY3_UNET, TINY3_VAE, TINY3_CLIP)}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request: Any, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    """The same tiny weights in every source layout, plus the diffusers-folder conversion."""
    unet, vae, clip = MODELS[request.param]
    components = build_components(seed=7, unet_cfg=unet, vae_cfg=vae, clip_cfg=clip)
    root = tmp_path_factory.mktemp(request.param)
    sources = {
        "diffusers": save_diffusers_folder(components, root / "diffusers"),
        "sgm": write_sgm_safetensors(components, root / "svd.safetensors"),
        "mindone": write_mindone_ckpt(components, root / "svd-0123abcd.ckpt"),
        "torch": write_torch_checkpoint(components, root / "svd.ckpt", wrap=True),
        "torch_plain": write_torch_checkpoint(components, root / "plain.pt", wrap=False),
    }
    reference = convert_checkpoint(sources["diffusers"], root / "from_diffusers", progress=False)
    return dict(
        name=request.param,
        components=components,
        root=root,
        sources=sources,
        reference=reference,
        config_yaml=reference.out_dir / "config.yaml",
    )


def test_every_source_gives_identical_weights(model: Dict[str, Any]) -> None:
    root, reference = model["root"], model["reference"]
    expected_hash = sha256(reference.weights_path)
    for kind in ("sgm", "mindone", "torch", "torch_plain"):
        report = convert_checkpoint(
            model["sources"][kind],
            root / f"out_{kind}",
            config=model["config_yaml"],
            progress=False,
        )
        assert sha256(report.weights_path) == expected_hash, kind
        assert report.source_format == ("mindone" if kind == "mindone" else "sgm")
    # our own directory as a source (e.g. a training output) passes through unchanged
    again = convert_checkpoint(reference.out_dir, root / "out_svdeploy", progress=False)
    assert again.source_format == "svdeploy"
    assert sha256(again.weights_path) == expected_hash


def test_weights_are_the_diffusers_weights(model: Dict[str, Any]) -> None:
    cfg, weights = read_checkpoint_dir(model["reference"].out_dir)
    expected = sgm_state_dict(model["components"])  # reference mapping, written independently
    loaded = load_file(str(weights))
    assert sorted(loaded) == sorted(sgm_parameter_shapes(cfg)) == sorted(expected)
    for name, value in expected.items():
        assert loaded[name].dtype == np.float32
        assert np.array_equal(loaded[name], value), name


def test_report_counts_and_provenance(model: Dict[str, Any]) -> None:
    report = convert_checkpoint(
        model["sources"]["sgm"],
        model["root"] / "counted",
        config=model["config_yaml"],
        progress=False,
    )
    table = sgm_parameter_shapes(report.config)
    assert report.total_tensors == len(table)
    assert report.ignored == len(EXTRA_SGM_TENSORS)
    assert report.source_dtypes == {"F32": len(table)}
    provenance = json.loads((report.out_dir / "convert.json").read_text())
    assert provenance["source_format"] == "sgm" and provenance["container"] == "safetensors"
    assert provenance["tensors"] == len(table) and provenance["ignored_tensors"] == len(
        EXTRA_SGM_TENSORS
    )
    assert provenance["tensors_per_network"] == report.tensors
    assert sorted(p.name for p in report.out_dir.iterdir()) == [
        "config.yaml",
        "convert.json",
        "weights.safetensors",
    ]
    mindone = convert_checkpoint(
        model["sources"]["mindone"],
        model["root"] / "counted_m",
        config=model["config_yaml"],
        progress=False,
    )
    assert mindone.ignored == len(EXTRA_MINDONE_TENSORS)


def test_diffusers_config_equals_tiny_preset(tmp_path: Path) -> None:
    components = build_components(seed=1)
    folder = save_diffusers_folder(components, tmp_path / "diffusers")
    report = convert_checkpoint(folder, tmp_path / "out", progress=False)
    tiny = load_model_config("tiny")
    cfg, _ = read_checkpoint_dir(tmp_path / "out")
    assert cfg.unet == tiny.unet and cfg.vae == tiny.vae and cfg.image_encoder == tiny.image_encoder
    assert cfg.num_frames == tiny.num_frames == TINY_UNET["num_frames"]
    assert (cfg.height, cfg.width) == (32, 32)  # sample_size 16 × VAE factor 2
    assert report.config == cfg
    # --config may override sizes and defaults as long as the networks agree
    overridden = convert_checkpoint(folder, tmp_path / "out_tiny", config="tiny", progress=False)
    assert overridden.config == tiny
    assert sha256(overridden.weights_path) == sha256(report.weights_path)


def test_diffusers_config_mismatch(model: Dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"does not describe the networks of .*unet\.model_channels: 32 vs 320"
    ):
        convert_checkpoint(
            model["sources"]["diffusers"], tmp_path / "out", config="svd", progress=False
        )
    assert not (tmp_path / "out").exists()


def test_half_precision_sources(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    components = build_components(seed=2)
    expected = sgm_state_dict(components)
    f16 = write_sgm_safetensors(components, tmp_path / "half.safetensors", dtype=np.float16)
    report = convert_checkpoint(f16, tmp_path / "out16", config="tiny", progress=False)
    assert report.source_dtypes == {"F16": len(expected)}
    loaded = load_file(str(report.weights_path))
    for name, value in expected.items():
        assert np.array_equal(loaded[name], value.astype(np.float16).astype(np.float32)), name
    bf16 = write_sgm_bf16_safetensors(components, tmp_path / "bf16.safetensors")
    report = convert_checkpoint(bf16, tmp_path / "outbf", config="tiny", progress=False)
    loaded = load_file(str(report.weights_path))
    for name, value in expected.items():
        assert np.array_equal(
            loaded[name], torch.from_numpy(value).to(torch.bfloat16).float().numpy()
        ), name
    ms16 = write_mindone_ckpt(components, tmp_path / "half.ckpt", dtype=np.float16)
    report = convert_checkpoint(ms16, tmp_path / "outms16", config="tiny", progress=False)
    assert report.source_format == "mindone"
    assert sha256(report.weights_path) == sha256(tmp_path / "out16" / "weights.safetensors")


# ---------------------------------------------------------------------------------------------
# Strict errors
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_sgm_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    components = build_components(seed=3)
    return write_sgm_safetensors(
        components, tmp_path_factory.mktemp("tiny_sgm") / "svd.safetensors"
    )


@pytest.fixture()
def tiny_sgm(tiny_sgm_file: Path) -> Dict[str, np.ndarray]:
    return load_file(str(tiny_sgm_file))


def test_missing_unexpected_and_misshaped_in_one_error(
    tiny_sgm: Dict[str, np.ndarray], tmp_path: Path
) -> None:
    tensors = dict(tiny_sgm)
    del tensors["model.diffusion_model.out.2.bias"]
    tensors["model.diffusion_model.input_blocks.1.0.extra.weight"] = np.zeros(3, np.float32)
    tensors["first_stage_model.decoder.conv_in.weight"] = np.zeros((64, 4, 3, 1), np.float32)
    save_file(tensors, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError) as info:
        convert_checkpoint(
            tmp_path / "bad.safetensors", tmp_path / "out", config="tiny", progress=False
        )
    message = str(info.value)
    assert "1 missing, 1 unexpected, 1 mis-shaped" in message
    assert "missing: model.diffusion_model.out.2.bias" in message
    assert "unexpected: model.diffusion_model.input_blocks.1.0.extra.weight" in message
    assert (
        "first_stage_model.decoder.conv_in.weight (file (64, 4, 3, 1), expected (64, 4, 3, 3))"
        in message
    )
    assert "\n" not in message
    assert not (tmp_path / "out").exists()


def test_long_lists_are_shortened_but_counted(
    tiny_sgm: Dict[str, np.ndarray], tmp_path: Path
) -> None:
    clip = "conditioner.embedders.0.open_clip.model.visual."
    tensors = {k: v for k, v in tiny_sgm.items() if not k.startswith(clip)}
    save_file(tensors, str(tmp_path / "noclip.safetensors"))
    with pytest.raises(CheckpointError) as info:
        convert_checkpoint(
            tmp_path / "noclip.safetensors", tmp_path / "out", config="tiny", progress=False
        )
    message = str(info.value)
    assert "32 missing, 0 unexpected, 0 mis-shaped" in message
    assert "(20 more)" in message  # 8 first + 4 last names shown
    assert message.count(clip) == 12


def test_wrong_preset_says_which_fits(tiny_sgm_file: Path, tmp_path: Path) -> None:
    with pytest.raises(
        CheckpointError,
        match=r"does not fit preset 'svd': .*the file's tensors fit preset\(s\) tiny",
    ):
        convert_checkpoint(tiny_sgm_file, tmp_path / "out", config="svd", progress=False)
    with pytest.raises(ConfigError, match=r"its tensors fit preset\(s\) tiny"):
        convert_checkpoint(tiny_sgm_file, tmp_path / "out", progress=False)


def test_single_file_needs_a_config(model: Dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"pass --config svd \(14 frames\) or --config svd_xt \(25 frames\)"
    ):
        convert_checkpoint(model["sources"]["mindone"], tmp_path / "out", progress=False)


def test_forced_format_changes_the_naming(model: Dict[str, Any], tmp_path: Path) -> None:
    # mindone names read as sgm names: every norm is gamma/beta → missing + unexpected
    with pytest.raises(CheckpointError, match=r"missing, .* unexpected.*\.gamma"):
        convert_checkpoint(
            model["sources"]["mindone"],
            tmp_path / "out",
            config=model["config_yaml"],
            source_format="sgm",
            progress=False,
        )
    # sgm names read as mindone names are unchanged
    report = convert_checkpoint(
        model["sources"]["sgm"],
        tmp_path / "out2",
        config=model["config_yaml"],
        source_format="mindone",
        progress=False,
    )
    assert sha256(report.weights_path) == sha256(model["reference"].weights_path)
    with pytest.raises(CheckpointError, match="--from diffusers expects a directory"):
        convert_checkpoint(
            model["sources"]["sgm"], tmp_path / "out3", source_format="diffusers", progress=False
        )
    with pytest.raises(CheckpointError, match="--from sgm expects a single checkpoint file"):
        convert_checkpoint(
            model["sources"]["diffusers"], tmp_path / "out4", source_format="sgm", progress=False
        )


def test_unknown_source_format(model: Dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(
        CheckpointError,
        match=r"--from 'stability': expected one of sgm, mindone, diffusers, svdeploy",
    ):
        convert_checkpoint(
            model["sources"]["sgm"],
            tmp_path / "out",
            config="tiny",
            source_format="stability",  # type: ignore[arg-type]
            progress=False,
        )


def test_truncated_and_foreign_sources(model: Dict[str, Any], tmp_path: Path) -> None:
    data = model["sources"]["sgm"].read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors is truncated"):
        convert_checkpoint(
            tmp_path / "cut.safetensors", tmp_path / "out", config="tiny", progress=False
        )
    data = model["sources"]["mindone"].read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=r"cut\.ckpt is truncated"):
        convert_checkpoint(tmp_path / "cut.ckpt", tmp_path / "out", config="tiny", progress=False)
    (tmp_path / "photo.safetensors").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(
        CheckpointError,
        match=r"photo\.safetensors is not a checkpoint svdeploy can read \(it is a PNG image\)",
    ):
        convert_checkpoint(
            tmp_path / "photo.safetensors", tmp_path / "out", config="tiny", progress=False
        )
    with pytest.raises(CheckpointError, match=r"source '.*nothing\.ckpt' does not exist"):
        convert_checkpoint(
            tmp_path / "nothing.ckpt", tmp_path / "out", config="tiny", progress=False
        )
    assert not (tmp_path / "out").exists()


def test_diffusers_component_file_alone(model: Dict[str, Any], tmp_path: Path) -> None:
    unet_file = model["sources"]["diffusers"] / "unet" / "diffusion_pytorch_model.safetensors"
    with pytest.raises(CheckpointError, match="holds no tensor of the four SVD networks"):
        convert_checkpoint(unet_file, tmp_path / "out", config="tiny", progress=False)


def test_bad_directories(model: Dict[str, Any], tmp_path: Path) -> None:
    import shutil

    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="is an empty directory"):
        convert_checkpoint(tmp_path / "empty", tmp_path / "out", progress=False)
    partial = tmp_path / "partial"
    shutil.copytree(model["sources"]["diffusers"], partial)
    shutil.rmtree(partial / "vae")
    with pytest.raises(CheckpointError, match=r"looks like a diffusers folder but has no vae/"):
        convert_checkpoint(partial, tmp_path / "out", progress=False)
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "config.yaml").write_text("variant: tiny\n")
    with pytest.raises(CheckpointError, match="has no weights.safetensors"):
        convert_checkpoint(tmp_path / "own", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_diffusers_missing_tensor_is_named(model: Dict[str, Any], tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "diffusers"
    shutil.copytree(model["sources"]["diffusers"], folder)
    weights = folder / "image_encoder" / "model.safetensors"
    tensors = load_file(str(weights))
    del tensors["vision_model.encoder.layers.1.self_attn.k_proj.bias"]
    tensors["vision_model.extra"] = np.zeros(2, np.float32)
    save_file(tensors, str(weights))
    with pytest.raises(
        CheckpointError,
        match=(
            r"1 missing, 1 unexpected, 0 mis-shaped; missing: "
            r"image_encoder/vision_model\.encoder\.layers\.1\.self_attn\.k_proj\.bias; "
            r"unexpected: image_encoder/vision_model\.extra"
        ),
    ):
        convert_checkpoint(folder, tmp_path / "out", progress=False)


# ---------------------------------------------------------------------------------------------
# Output directory
# ---------------------------------------------------------------------------------------------
def test_existing_output_needs_overwrite(model: Dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match=r"exists and is not empty; pass --overwrite"):
        convert_checkpoint(
            model["sources"]["sgm"], out, config=model["config_yaml"], progress=False
        )
    assert (out / "keep.txt").read_text() == "mine"
    report = convert_checkpoint(
        model["sources"]["sgm"], out, config=model["config_yaml"], overwrite=True, progress=False
    )
    assert not (out / "keep.txt").exists()
    assert sha256(report.weights_path) == sha256(model["reference"].weights_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary leftovers
    (tmp_path / "empty").mkdir()
    convert_checkpoint(
        model["sources"]["sgm"], tmp_path / "empty", config=model["config_yaml"], progress=False
    )
    inside = tmp_path / "holder"
    inside.mkdir()
    (inside / "svd.safetensors").write_bytes(model["sources"]["sgm"].read_bytes())
    with pytest.raises(CheckpointError, match="contains the source"):
        convert_checkpoint(
            inside / "svd.safetensors",
            inside,
            config=model["config_yaml"],
            overwrite=True,
            progress=False,
        )
    with pytest.raises(CheckpointError, match="contains the source"):
        convert_checkpoint(report.out_dir, report.out_dir, overwrite=True, progress=False)
    assert (inside / "svd.safetensors").is_file() and report.weights_path.is_file()
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(CheckpointError, match="exists and is not a directory"):
        convert_checkpoint(
            model["sources"]["sgm"],
            tmp_path / "a_file",
            config=model["config_yaml"],
            progress=False,
        )


def test_failure_midway_leaves_no_output(
    model: Dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    original = SafetensorsFile.read

    def failing_read(self: SafetensorsFile, name: str) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 50:
            raise OSError("simulated disk error")
        return original(self, name)

    monkeypatch.setattr(SafetensorsFile, "read", failing_read)
    # one line for the CLI (a CheckpointError), naming the OS error
    with pytest.raises(CheckpointError, match="failed: simulated disk error; nothing was written"):
        convert_checkpoint(
            model["sources"]["sgm"], tmp_path / "out", config=model["config_yaml"], progress=False
        )
    assert calls["n"] == 50
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary directory


def test_failure_midway_keeps_the_old_output(
    model: Dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    first = convert_checkpoint(
        model["sources"]["sgm"], out, config=model["config_yaml"], progress=False
    )
    before = sha256(first.weights_path)
    monkeypatch.setattr(
        convert_module,
        "save_model_config",
        lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()),
    )
    with pytest.raises(KeyboardInterrupt):
        convert_checkpoint(
            model["sources"]["torch"],
            out,
            config=model["config_yaml"],
            overwrite=True,
            progress=False,
        )
    assert sha256(out / "weights.safetensors") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
