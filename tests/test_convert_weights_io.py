"""Streaming tensor file I/O (svdeploy.models.weights_io) against the reference libraries."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from svdeploy.errors import CheckpointError
from svdeploy.models.weights_io import (
    MindsporeCkptFile,
    SafetensorsFile,
    SafetensorsWriter,
    TorchFile,
    bf16_bits_to_float32,
    open_tensor_file,
    save_safetensors,
    sniff_file,
)

RNG = np.random.default_rng(0)
ARRAYS = {
    "f32": RNG.standard_normal((3, 5)).astype(np.float32),
    "f16": RNG.standard_normal((7,)).astype(np.float16),
    "f64": RNG.standard_normal((2, 2, 2)).astype(np.float64),
    "i64": np.arange(-6, 6, dtype=np.int64).reshape(3, 4),
    "i32": np.arange(10, dtype=np.int32),
    "u8": np.arange(200, 206, dtype=np.uint8),
    "i8": np.array([-3, 4], dtype=np.int8),
    "b": np.array([True, False, True]),
    "scalar": np.array(2.5, dtype=np.float32),
    "empty": np.zeros((0, 4), dtype=np.float32),
}


# ---------------------------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------------------------
def test_reads_files_of_the_reference_writer(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    path = tmp_path / "ref.safetensors"
    save_file(ARRAYS, str(path), metadata={"format": "np"})
    with SafetensorsFile(path) as f:
        assert set(f.infos) == set(ARRAYS)
        assert f.metadata == {"format": "np"}
        for name, value in ARRAYS.items():
            got = f.read(name)
            assert got.dtype == value.dtype and got.shape == value.shape
            assert np.array_equal(got, value)
        assert f.read_float32("f16").dtype == np.float32
        with pytest.raises(
            CheckpointError, match="tensor 'i64' has dtype I64; expected a floating-point"
        ):
            f.read_float32("i64")
        with pytest.raises(CheckpointError, match="no tensor named 'nope'"):
            f.read("nope")


def test_bf16_is_widened_by_bit_shift(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    values = torch.randn(4, 6).to(torch.bfloat16)
    values[0, 0] = float("inf")
    path = tmp_path / "bf16.safetensors"
    save_file({"x": values}, str(path))
    with SafetensorsFile(path) as f:
        assert f.infos["x"].dtype == "BF16"
        got = f.read("x")
    assert got.dtype == np.float32
    assert np.array_equal(got, values.to(torch.float32).numpy())
    assert np.array_equal(bf16_bits_to_float32(np.array([0x3F80, 0xC000], np.uint16)), [1.0, -2.0])


def test_writer_output_is_read_by_the_reference_library(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    path = tmp_path / "ours.safetensors"
    save_safetensors(path, ARRAYS, metadata={"producer": "test"})
    loaded = load_file(str(path))
    assert set(loaded) == set(ARRAYS)
    for name, value in ARRAYS.items():
        assert loaded[name].dtype == value.dtype and np.array_equal(loaded[name], value)
    header_len = struct.unpack("<Q", path.read_bytes()[:8])[0]
    assert (8 + header_len) % 8 == 0  # data aligned like the reference writer


def test_writer_streams_in_header_order_and_checks(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    entries = [("a", (2,), "F32"), ("b", (3,), "F16"), ("c", (2, 2), "BF16")]
    with SafetensorsWriter(path, entries) as writer:
        assert not path.exists()  # only the temporary file exists until the end
        with pytest.raises(ValueError, match="out of order; expected 'a'"):
            writer.write("b", np.zeros(3, np.float16))
        writer.write("a", np.array([1.0, 2.0], np.float32))
        with pytest.raises(ValueError, match="has shape"):
            writer.write("b", np.zeros(4, np.float16))
        writer.write("b", np.ones(3, np.float16))
        writer.write("c", np.array([[1.0, -2.0], [0.5, 3.0]], np.float32))
    with SafetensorsFile(path) as f:
        assert np.array_equal(f.read("c"), [[1.0, -2.0], [0.5, 3.0]])
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_writer_leaves_nothing_when_incomplete_or_failed(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    writer = SafetensorsWriter(path, [("a", (2,), "F32"), ("b", (2,), "F32")])
    writer.write("a", np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="only 1 of 2 tensors were written"):
        writer.close()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError):
        with SafetensorsWriter(path, [("a", (2,), "F32")]):
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_truncated_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    save_safetensors(path, {"a": np.zeros((100,), np.float32), "b": np.ones((50,), np.float32)})
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match=r"t\.safetensors is truncated: tensor 'b'"):
        SafetensorsFile(path)
    path.write_bytes(data[:20])
    with pytest.raises(CheckpointError, match="truncated"):
        SafetensorsFile(path)


def test_bad_headers(tmp_path: Path) -> None:
    path = tmp_path / "h.safetensors"
    raw = b'{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}'
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(16))
    with pytest.raises(CheckpointError, match=r"should take 16 bytes but its data_offsets span 12"):
        SafetensorsFile(path)
    raw = b'{"a": [1, 2'
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(16))
    with pytest.raises(CheckpointError, match="header is not valid JSON"):
        SafetensorsFile(path)
    raw = b'{"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}'
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(16))
    with pytest.raises(CheckpointError, match="invalid shape"):
        SafetensorsFile(path)


def test_foreign_files_are_named(tmp_path: Path) -> None:
    png = tmp_path / "image.safetensors"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(
        CheckpointError,
        match=r"image\.safetensors is not a checkpoint svdeploy can read \(it is a PNG image\)",
    ):
        open_tensor_file(png)
    with pytest.raises(
        CheckpointError,
        match=r"not a safetensors file \(or is truncated\): the header length field",
    ):
        SafetensorsFile(png)
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="it is empty"):
        open_tensor_file(empty)
    with pytest.raises(CheckpointError, match="cannot read"):
        sniff_file(tmp_path / "missing.ckpt")


# ---------------------------------------------------------------------------------------------
# MindSpore .ckpt
# ---------------------------------------------------------------------------------------------
def _save_ms(path: Path, arrays, **kwargs) -> None:
    import mindspore as ms

    ms.save_checkpoint(
        [{"name": k, "data": ms.Tensor(v)} for k, v in arrays.items()], str(path), **kwargs
    )


def test_mindspore_ckpt_matches_save_checkpoint(tmp_path: Path) -> None:
    import mindspore as ms

    arrays = {k: v for k, v in ARRAYS.items() if k not in ("empty", "scalar")}
    path = tmp_path / "net.ckpt"
    _save_ms(path, arrays)
    assert sniff_file(path) == "mindspore"
    with open_tensor_file(path) as f:
        assert isinstance(f, MindsporeCkptFile)
        assert set(f.infos) == set(arrays)
        for name, value in arrays.items():
            got = f.read(name)
            assert (
                got.dtype == value.dtype and got.shape == value.shape and np.array_equal(got, value)
            )
    # and against MindSpore's own loader
    loaded = ms.load_checkpoint(str(path))
    with MindsporeCkptFile(path) as f:
        for name in arrays:
            assert np.array_equal(loaded[name].asnumpy(), f.read(name))


def test_mindspore_bfloat16_and_crc_trailer(tmp_path: Path) -> None:
    import mindspore as ms

    values = RNG.standard_normal((4, 3)).astype(np.float32)
    path = tmp_path / "bf.ckpt"
    ms.save_checkpoint(
        [
            {"name": "w", "data": ms.Tensor(values, ms.bfloat16)},
            {"name": "v", "data": ms.Tensor(values)},
        ],
        str(path),
        crc_check=True,
    )
    with MindsporeCkptFile(path) as f:
        assert f.infos["w"].dtype == "BF16"
        expected = ms.Tensor(values, ms.bfloat16).astype(ms.float32).asnumpy()
        assert np.array_equal(f.read("w"), expected)
        assert np.array_equal(f.read("v"), values)


def test_mindspore_sliced_tensors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tensors over SLICE_SIZE are stored as several records; shrink the limit to see it fast."""
    from mindspore.train import serialization

    monkeypatch.setattr(serialization, "SLICE_SIZE", 1)  # in KB
    big = RNG.standard_normal((50, 33)).astype(np.float32)
    half = RNG.standard_normal((40, 20)).astype(np.float16)
    path = tmp_path / "sliced.ckpt"
    _save_ms(path, {"big": big, "small": np.ones(3, np.float32), "half": half})
    with MindsporeCkptFile(path) as f:
        assert len(f._entries["big"].segments) > 1 and len(f._entries["half"].segments) > 1
        assert np.array_equal(f.read("big"), big)
        assert np.array_equal(f.read("half"), half)
        assert np.array_equal(f.read("small"), np.ones(3, np.float32))


@pytest.mark.slow
def test_mindspore_real_large_tensor(tmp_path: Path) -> None:
    """A 520 MB float32 tensor crosses MindSpore's real 512 MB slice size."""
    rows = 520 * 1024 * 1024 // (4 * 1024)
    # integer-valued floats below 2**24 are exact, so the expected rows can be recomputed
    big = (
        (np.arange(rows * 1024, dtype=np.int64) % 1_000_003).astype(np.float32).reshape(rows, 1024)
    )
    path = tmp_path / "large.ckpt"
    _save_ms(path, {"big": big, "tail": np.arange(5, dtype=np.float16)})
    del big
    with MindsporeCkptFile(path) as f:
        assert len(f._entries["big"].segments) == 2
        got = f.read("big")
        assert got.shape == (rows, 1024)
        for row in (0, rows // 2 - 1, rows // 2, rows - 1):  # both sides of the slice boundary
            expected = (np.arange(row * 1024, (row + 1) * 1024, dtype=np.int64) % 1_000_003).astype(
                np.float32
            )
            assert np.array_equal(got[row], expected)
        assert np.array_equal(f.read("tail"), np.arange(5, dtype=np.float16))


def test_mindspore_truncated_and_foreign(tmp_path: Path) -> None:
    path = tmp_path / "net.ckpt"
    _save_ms(path, {"a": np.zeros((64, 64), np.float32), "b": np.ones((64, 64), np.float32)})
    data = path.read_bytes()
    truncated = tmp_path / "cut.ckpt"
    truncated.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match=r"cut\.ckpt is truncated"):
        MindsporeCkptFile(truncated)
    text = tmp_path / "notes.ckpt"
    text.write_bytes(b"\nhello world, this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match=r"notes\.ckpt"):
        open_tensor_file(text)


# ---------------------------------------------------------------------------------------------
# torch
# ---------------------------------------------------------------------------------------------
def test_torch_file_unwraps_state_dict(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    state = {
        "w": torch.randn(3, 4),
        "h": torch.randn(2).to(torch.float16),
        "bf": torch.randn(5).to(torch.bfloat16),
    }
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": state, "global_step": 3}, str(path))
    assert sniff_file(path) == "torch"
    with open_tensor_file(path) as f:
        assert isinstance(f, TorchFile)
        assert set(f.infos) == {"w", "h", "bf"} and "global_step" in f.non_tensors
        assert f.infos["bf"].dtype == "BF16"
        assert np.array_equal(f.read("w"), state["w"].numpy())
        assert np.array_equal(f.read("h"), state["h"].numpy())
        assert np.array_equal(f.read("bf"), state["bf"].float().numpy())


def test_torch_legacy_format(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "legacy.pt"
    torch.save({"w": torch.arange(6.0)}, str(path), _use_new_zipfile_serialization=False)
    assert sniff_file(path) == "torch"
    with open_tensor_file(path) as f:
        assert np.array_equal(f.read("w"), np.arange(6.0, dtype=np.float32))


def test_torch_refuses_pickled_objects(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    import argparse

    path = tmp_path / "objects.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "args": argparse.Namespace(lr=1.0)}, str(path))
    with pytest.raises(CheckpointError, match="weights_only=True"):
        TorchFile(path)


def test_torch_missing_gives_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    path = tmp_path / "model.pt"
    path.write_bytes(b"PK\x03\x04" + bytes(60))
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(CheckpointError, match="needs PyTorch, which is not installed"):
        open_tensor_file(path)


def test_mindspore_loads_our_safetensors(tmp_path: Path) -> None:
    """MindSpore 2.10 reads the files our streaming writer produces (F32, F16, BF16)."""
    import mindspore as ms

    values = RNG.standard_normal((4, 5)).astype(np.float32)
    path = tmp_path / "w.safetensors"
    with SafetensorsWriter(
        path,
        [("x", (4, 5), "F32"), ("y", (4, 5), "F16"), ("z", (4, 5), "BF16")],
        metadata={"format": "pt"},
    ) as writer:
        writer.write("x", values)
        writer.write("y", values.astype(np.float16))
        writer.write("z", values)
    loaded = ms.load_checkpoint(str(path), format="safetensors")
    assert np.array_equal(loaded["x"].asnumpy(), values)
    assert np.array_equal(loaded["y"].asnumpy(), values.astype(np.float16))
    assert loaded["z"].dtype == ms.bfloat16
    with SafetensorsFile(path) as f:
        assert np.array_equal(loaded["z"].astype(ms.float32).asnumpy(), f.read("z"))
    assert (
        json.loads(path.read_bytes()[8 : 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]])["x"][
            "dtype"
        ]
        == "F32"
    )
