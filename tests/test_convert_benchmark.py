"""The full-size conversion benchmark script, run at tiny size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from svdeploy.benchmarks.fullsize_checkpoint import EXTRA_TENSORS, main, write_random_checkpoint
from svdeploy.config import load_model_config
from svdeploy.models.keys import count_parameters, sgm_parameter_shapes
from svdeploy.models.weights_io import SafetensorsFile


def test_random_checkpoint_has_every_tensor(tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    stats = write_random_checkpoint("tiny", path, dtype="float16", progress=False)
    table = sgm_parameter_shapes(load_model_config("tiny"))
    with SafetensorsFile(path) as f:
        assert {k: v.shape for k, v in f.infos.items()} == {**table, **EXTRA_TENSORS}
        assert {v.dtype for v in f.infos.values()} == {"F16"}
        assert abs(float(f.read_float32("model.diffusion_model.out.2.weight").std()) - 0.02) < 0.005
    assert stats["parameters"] == count_parameters({**table, **EXTRA_TENSORS})


def test_benchmark_reports_and_cleans_up(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "random.safetensors"
    main(["--variant", "tiny", "--out", str(out), "--quiet"])
    report = json.loads(capsys.readouterr().out)
    params = count_parameters(sgm_parameter_shapes(load_model_config("tiny")))
    assert report["convert"]["output_bytes"] > 4 * params
    assert report["convert"]["peak_rss_bytes_psutil"] > 0 and report["convert"]["seconds"] > 0
    assert report["file_bytes"] > report["convert"]["output_bytes"]  # extras are dropped
    assert list(tmp_path.iterdir()) == []  # the random file and the converted directory are gone
