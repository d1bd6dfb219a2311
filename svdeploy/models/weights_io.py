"""Streaming tensor file I/O: safetensors (read + write), MindSpore ``.ckpt`` and torch files
(read).

Full-size SVD checkpoints hold 9 GB, so nothing here loads a whole file: a reader parses the
index (safetensors header, or a scan of the protobuf records of a MindSpore checkpoint) when it
opens, and :meth:`TensorFile.read` reads exactly one tensor with ``seek`` + ``readinto``. The
safetensors writer puts the header first (names, shapes and dtypes are known in advance) and then
takes the tensors one at a time, writing to a temporary name that is renamed into place when the
last tensor arrived.

Every problem with a file (foreign content, a bad header, truncation, an unsupported dtype) is a
:class:`~svdeploy.errors.CheckpointError` that names the file and what is wrong.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from svdeploy.errors import CheckpointError

PathLike = Union[str, os.PathLike]
Shape = Tuple[int, ...]

# safetensors dtype code → numpy dtype of the bytes on disk (BF16 is read as raw uint16 and
# widened to float32 by a 16-bit shift, so ml_dtypes is not needed).
_SAFETENSORS_DTYPES: Dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NUMPY_TO_SAFETENSORS: Dict[np.dtype, str] = {
    dt: code for code, dt in _SAFETENSORS_DTYPES.items() if code != "BF16"
}

# MindSpore checkpoint TensorProto.tensor_type → safetensors dtype code.
_MINDSPORE_DTYPES: Dict[str, str] = {
    "Float64": "F64",
    "Float32": "F32",
    "Float16": "F16",
    "BFloat16": "BF16",
    "Int64": "I64",
    "Int32": "I32",
    "Int16": "I16",
    "Int8": "I8",
    "UInt64": "U64",
    "UInt32": "U32",
    "UInt16": "U16",
    "UInt8": "U8",
    "Bool": "BOOL",
}

FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the format's own limit


@dataclass(frozen=True)
class TensorInfo:
    """What a file says about one tensor, before reading it."""

    name: str
    shape: Shape
    dtype: str  # safetensors code: F32, F16, BF16, F64, I64, ...

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * itemsize(self.dtype)


def itemsize(dtype: str) -> int:
    return _SAFETENSORS_DTYPES[dtype].itemsize


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 is the upper half of a float32: shift the 16 bits into place."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def float32_to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even float32 → bfloat16 bit pattern (for writing BF16 test files)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + 0x7FFF
    return ((bits + rounding) >> 16).astype(np.uint16)


class TensorFile:
    """A read-only file of named tensors. ``infos`` is known after opening; ``read`` reads one."""

    path: Path
    format_name: str = "tensor file"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.infos: Dict[str, TensorInfo] = {}
        # Entries that are not tensors (torch metadata, MindSpore string values): name → reason
        self.non_tensors: Dict[str, str] = {}

    def read(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def read_float32(self, name: str) -> np.ndarray:
        """One tensor as a C-contiguous float32 array (the only precision svdeploy stores)."""
        info = self._info(name)
        array = self.read(name)
        if info.dtype not in FLOAT_DTYPES:
            raise CheckpointError(
                f"{self.path}: tensor {name!r} has dtype {info.dtype}; expected a floating-point "
                f"tensor ({', '.join(FLOAT_DTYPES)})"
            )
        return np.ascontiguousarray(array, dtype=np.float32)

    def _info(self, name: str) -> TensorInfo:
        try:
            return self.infos[name]
        except KeyError:
            raise CheckpointError(f"{self.path}: no tensor named {name!r}") from None

    def close(self) -> None:
        pass

    def __enter__(self) -> "TensorFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _readinto_exact(fh: BinaryIO, buffer: memoryview, path: Path, what: str) -> None:
    view = buffer.cast("B") if buffer.format != "B" else buffer
    done = 0
    while done < len(view):
        got = fh.readinto(view[done:])
        if not got:
            raise CheckpointError(
                f"{path} is truncated: {what} ends after {done} of {len(view)} bytes"
            )
        done += got


# ---------------------------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------------------------
class SafetensorsFile(TensorFile):
    """Streaming reader of the safetensors format (8-byte little-endian header size, JSON header,
    then the raw little-endian data; offsets are relative to the end of the header)."""

    format_name = "safetensors"

    def __init__(self, path: PathLike) -> None:
        super().__init__(Path(path))
        self.metadata: Dict[str, str] = {}
        self._offsets: Dict[str, Tuple[int, int]] = {}
        try:
            self._fh: Optional[BinaryIO] = open(self.path, "rb")
        except OSError as exc:
            raise CheckpointError(f"cannot open {self.path}: {exc.strerror}") from None
        try:
            self._parse_header()
        except BaseException:
            self.close()
            raise

    def _parse_header(self) -> None:
        assert self._fh is not None
        size = os.fstat(self._fh.fileno()).st_size
        first = self._fh.read(8)
        if len(first) < 8:
            raise CheckpointError(f"{self.path} is not a safetensors file: only {size} bytes long")
        (header_len,) = struct.unpack("<Q", first)
        if header_len > size - 8 or header_len > MAX_SAFETENSORS_HEADER or header_len < 2:
            raise CheckpointError(
                f"{self.path} is not a safetensors file (or is truncated): the header length field "
                f"reads {header_len} bytes but the file has {size} bytes"
            )
        raw = self._fh.read(header_len)
        if not raw.lstrip().startswith(b"{"):
            raise CheckpointError(
                f"{self.path} is not a safetensors file: the header does not start "
                "with a JSON object"
            )
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(
                f"{self.path}: the safetensors header is not valid JSON ({exc})"
            ) from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{self.path}: the safetensors header is not a JSON object")
        self._data_start = 8 + header_len
        data_size = size - self._data_start
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict):
            raise CheckpointError(f"{self.path}: the safetensors __metadata__ is not an object")
        self.metadata = {str(k): str(v) for k, v in metadata.items()}
        for name, entry in header.items():
            info, begin, end = self._check_entry(name, entry)
            if end > data_size:
                raise CheckpointError(
                    f"{self.path} is truncated: tensor {name!r} "
                    f"needs data bytes {begin}..{end} but the "
                    f"file holds only {data_size} data bytes"
                )
            self.infos[name] = info
            self._offsets[name] = (begin, end)

    def _check_entry(self, name: str, entry: Any) -> Tuple[TensorInfo, int, int]:
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
            raise CheckpointError(
                f"{self.path}: header entry {name!r} lacks dtype/shape/data_offsets"
            )
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise CheckpointError(f"{self.path}: tensor {name!r} has an invalid shape {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and o >= 0 for o in offsets)
            or offsets[1] < offsets[0]
        ):
            raise CheckpointError(
                f"{self.path}: tensor {name!r} has invalid data_offsets {offsets!r}"
            )
        info = TensorInfo(name, tuple(shape), str(dtype))
        begin, end = offsets
        if dtype in _SAFETENSORS_DTYPES and end - begin != info.nbytes:
            raise CheckpointError(
                f"{self.path}: tensor {name!r} ({dtype}, shape {tuple(shape)}) should take "
                f"{info.nbytes} bytes but its data_offsets span {end - begin}"
            )
        return info, begin, end

    def read(self, name: str) -> np.ndarray:
        info = self._info(name)
        if info.dtype not in _SAFETENSORS_DTYPES:
            raise CheckpointError(
                f"{self.path}: tensor {name!r} has dtype {info.dtype}, which svdeploy "
                f"cannot read (supported: {', '.join(_SAFETENSORS_DTYPES)})"
            )
        if self._fh is None:
            raise CheckpointError(f"{self.path} is closed")
        begin, _ = self._offsets[name]
        array = np.empty(info.numel, dtype=_SAFETENSORS_DTYPES[info.dtype])
        self._fh.seek(self._data_start + begin)
        _readinto_exact(self._fh, memoryview(array).cast("B"), self.path, f"tensor {name!r}")
        if info.dtype == "BF16":
            array = bf16_bits_to_float32(array)
        return array.reshape(info.shape)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class SafetensorsWriter:
    """Write a safetensors file tensor by tensor, in the order given at construction.

    The header (names, dtypes, shapes, offsets) is written first; then :meth:`write` takes each
    tensor in turn. Data go to a temporary file in the same directory that is renamed to ``path``
    by :meth:`close` once every tensor arrived; on an exception (``with`` block) it is removed.
    """

    def __init__(
        self,
        path: PathLike,
        entries: Sequence[Tuple[str, Shape, str]],
        metadata: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.path = Path(path)
        self._entries = [
            TensorInfo(name, tuple(int(d) for d in shape), dtype) for name, shape, dtype in entries
        ]
        names = [e.name for e in self._entries]
        if len(set(names)) != len(names):
            raise ValueError("duplicate tensor names in SafetensorsWriter entries")
        for entry in self._entries:
            if entry.dtype not in _SAFETENSORS_DTYPES:
                raise ValueError(f"unsupported dtype {entry.dtype} for {entry.name}")
        header: Dict[str, Any] = {}
        if metadata:
            header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
        offset = 0
        for entry in self._entries:
            header[entry.name] = {
                "dtype": entry.dtype,
                "shape": list(entry.shape),
                "data_offsets": [offset, offset + entry.nbytes],
            }
            offset += entry.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * (-(8 + len(raw)) % 8)  # data start 8-byte aligned, like the reference writer
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        self._tmp = Path(tmp)
        self._fh: Optional[BinaryIO] = os.fdopen(fd, "wb")
        self._next = 0
        try:
            self._fh.write(struct.pack("<Q", len(raw)))
            self._fh.write(raw)
        except BaseException:
            self.abort()
            raise

    def write(self, name: str, array: np.ndarray) -> None:
        if self._fh is None:
            raise ValueError(f"SafetensorsWriter for {self.path} is closed")
        if self._next >= len(self._entries):
            raise ValueError(
                f"tensor {name!r}: all {len(self._entries)} tensors were already written"
            )
        entry = self._entries[self._next]
        if name != entry.name:
            raise ValueError(f"tensor {name!r} written out of order; expected {entry.name!r} next")
        if tuple(array.shape) != entry.shape:
            raise ValueError(
                f"tensor {name!r} has shape {tuple(array.shape)}; the header says {entry.shape}"
            )
        if entry.dtype == "BF16":
            data = float32_to_bf16_bits(array)
        else:
            expected = _SAFETENSORS_DTYPES[entry.dtype]
            if array.dtype.newbyteorder("<") != expected and array.dtype != expected:
                raise ValueError(
                    f"tensor {name!r} has dtype {array.dtype}; the header says {entry.dtype}"
                )
            data = np.ascontiguousarray(array, dtype=expected)
        if data.size:  # a zero-size view cannot be cast to bytes
            self._fh.write(memoryview(data.reshape(-1)).cast("B"))
        self._next += 1

    @property
    def remaining(self) -> int:
        return len(self._entries) - self._next

    def close(self) -> None:
        """Finish: every tensor must have been written; then the file is renamed into place."""
        if self._fh is None:
            return
        if self._next != len(self._entries):
            missing = self._entries[self._next].name
            self.abort()
            raise ValueError(
                f"{self.path}: only {self._next} of {len(self._entries)} tensors were "
                f"written (next expected: {missing!r})"
            )
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop the partial file."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tmp.exists():
            self._tmp.unlink()

    def __enter__(self) -> "SafetensorsWriter":
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def save_safetensors(
    path: PathLike, tensors: Mapping[str, np.ndarray], metadata: Optional[Mapping[str, str]] = None
) -> None:
    """Write a small in-memory dict of arrays (names sorted) through the streaming writer."""
    names = sorted(tensors)
    entries = []
    for name in names:
        dtype = np.asarray(tensors[name]).dtype
        code = _NUMPY_TO_SAFETENSORS.get(dtype.newbyteorder("<")) or _NUMPY_TO_SAFETENSORS.get(
            dtype
        )
        if code is None:
            raise ValueError(f"tensor {name!r}: numpy dtype {dtype} has no safetensors code")
        entries.append((name, np.shape(tensors[name]), code))
    with SafetensorsWriter(path, entries, metadata) as writer:
        for name in names:
            writer.write(name, np.asarray(tensors[name]))


# ---------------------------------------------------------------------------------------------
# MindSpore .ckpt (protobuf)
# ---------------------------------------------------------------------------------------------
# checkpoint.proto (MindSpore):
#   message Checkpoint { message Value { required string tag = 1;
#                                        oneof value { TensorProto tensor = 2;
#                                                      MapTensorProto maptensor = 3; } }
#                        repeated Value value = 1; }
#   message TensorProto { repeated int64 dims = 1; required string tensor_type = 2;
#                         required bytes tensor_content = 3; }
# save_checkpoint writes one serialised Checkpoint per tensor, back to back (which protobuf reads
# as one message with repeated values); tensors over 512 MB are split along axis 0 into several
# records with the same tag and full dims, and an optional 17-byte trailer b"crc_num" + 10 bytes
# may follow. The parser below walks that wire format itself so that the contents stay on disk.
_CRC_TRAILER = b"crc_num"
_CRC_TRAILER_LEN = len(_CRC_TRAILER) + 10


class _WireReader:
    """Minimal protobuf wire-format reading on a seekable file with bounds checks."""

    def __init__(self, fh: BinaryIO, path: Path, size: int) -> None:
        self.fh, self.path, self.size = fh, path, size

    def tell(self) -> int:
        return self.fh.tell()

    def varint(self, limit: int) -> int:
        result, shift = 0, 0
        while True:
            if self.fh.tell() >= limit:
                raise self._truncated("a varint")
            byte = self.fh.read(1)
            if not byte:
                raise self._truncated("a varint")
            value = byte[0]
            result |= (value & 0x7F) << shift
            if not value & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise CheckpointError(
                    f"{self.path}: malformed protobuf varint at byte {self.fh.tell()}"
                )

    def read_bytes(self, length: int, limit: int, what: str) -> bytes:
        if self.fh.tell() + length > limit:
            raise self._truncated(what)
        data = self.fh.read(length)
        if len(data) != length:
            raise self._truncated(what)
        return data

    def skip(self, wire_type: int, limit: int) -> None:
        if wire_type == 0:
            self.varint(limit)
        elif wire_type == 1:
            self._seek_to(self.fh.tell() + 8, limit)
        elif wire_type == 2:
            length = self.varint(limit)
            self._seek_to(self.fh.tell() + length, limit)
        elif wire_type == 5:
            self._seek_to(self.fh.tell() + 4, limit)
        else:
            raise CheckpointError(
                f"{self.path}: unsupported protobuf wire type {wire_type} at byte "
                f"{self.fh.tell()}; is this a MindSpore checkpoint?"
            )

    def _seek_to(self, position: int, limit: int) -> None:
        if position > limit:
            raise self._truncated("a field")
        self.fh.seek(position)

    def _truncated(self, what: str) -> CheckpointError:
        return CheckpointError(
            f"{self.path} is truncated or corrupt: {what} at byte {self.fh.tell()} "
            f"runs past the end of its record or of the file ({self.size} bytes)"
        )


@dataclass
class _CkptEntry:
    tag: str
    dims: Shape
    tensor_type: str
    segments: List[Tuple[int, int]]  # (file offset, length) of each tensor_content slice


class MindsporeCkptFile(TensorFile):
    """Streaming reader of MindSpore ``save_checkpoint`` files (unencrypted)."""

    format_name = "MindSpore checkpoint"

    def __init__(self, path: PathLike) -> None:
        super().__init__(Path(path))
        try:
            self._fh: Optional[BinaryIO] = open(self.path, "rb")
        except OSError as exc:
            raise CheckpointError(f"cannot open {self.path}: {exc.strerror}") from None
        self._entries: Dict[str, _CkptEntry] = {}
        try:
            self._scan()
        except BaseException:
            self.close()
            raise

    def _scan(self) -> None:
        assert self._fh is not None
        size = os.fstat(self._fh.fileno()).st_size
        end = self._records_end(size)
        self._fh.seek(0)
        wire = _WireReader(self._fh, self.path, size)
        previous_tag: Optional[str] = None
        while self._fh.tell() < end:
            start = self._fh.tell()
            key = wire.varint(end)
            if key != 0x0A:  # field 1 (value), length-delimited
                if start == 0:
                    raise CheckpointError(
                        f"{self.path} is not a MindSpore checkpoint (first byte 0x{key:02x}; "
                        "expected a protobuf Checkpoint; encrypted files are not supported)"
                    )
                wire.skip(key & 7, end)
                continue
            length = wire.varint(end)
            value_end = self._fh.tell() + length
            if value_end > end:
                raise CheckpointError(
                    f"{self.path} is truncated: the record at "
                    f"byte {start} needs {length} bytes but the "
                    f"file ends at byte {end}"
                )
            tag, entry = self._parse_value(wire, value_end, start)
            self._fh.seek(value_end)
            if entry is None:
                continue
            known = self._entries.get(tag)
            if known is not None and previous_tag == tag:
                # a further slice of a tensor over 512 MB
                if known.dims != entry.dims or known.tensor_type != entry.tensor_type:
                    raise CheckpointError(
                        f"{self.path}: slices of tensor {tag!r} disagree on shape or dtype"
                    )
                known.segments.extend(entry.segments)
            elif known is not None:
                raise CheckpointError(f"{self.path}: tensor {tag!r} appears twice")
            else:
                self._entries[tag] = entry
            previous_tag = tag
        if not self._entries and not self.non_tensors:
            raise CheckpointError(f"{self.path} is not a MindSpore checkpoint: it holds no tensors")
        self._index_tensors()

    def _records_end(self, size: int) -> int:
        """Where the protobuf records end: before the CRC trailer when the file has one."""
        assert self._fh is not None
        if size >= _CRC_TRAILER_LEN:
            self._fh.seek(size - _CRC_TRAILER_LEN)
            if self._fh.read(len(_CRC_TRAILER)) == _CRC_TRAILER:
                return size - _CRC_TRAILER_LEN
        return size

    def _index_tensors(self) -> None:
        """TensorInfo of every scanned entry with a tensor dtype (others are non_tensors)."""
        for tag, entry in self._entries.items():
            if entry.tensor_type == "str":
                self.non_tensors[tag] = "string value"
                continue
            dtype = _MINDSPORE_DTYPES.get(entry.tensor_type)
            if dtype is None:
                self.non_tensors[tag] = f"unsupported tensor_type {entry.tensor_type}"
                continue
            info = TensorInfo(tag, entry.dims, dtype)
            stored = sum(length for _, length in entry.segments)
            if stored != info.nbytes:
                raise CheckpointError(
                    f"{self.path}: tensor {tag!r} ({entry.tensor_type}, "
                    f"shape {entry.dims}) should hold "
                    f"{info.nbytes} bytes but the file stores "
                    f"{stored}; the file is truncated or corrupt"
                )
            self.infos[tag] = info

    def _parse_value(
        self, wire: _WireReader, value_end: int, start: int
    ) -> Tuple[str, Optional[_CkptEntry]]:
        assert self._fh is not None
        tag: Optional[str] = None
        entry: Optional[_CkptEntry] = None
        while self._fh.tell() < value_end:
            key = wire.varint(value_end)
            field, wire_type = key >> 3, key & 7
            if field == 1 and wire_type == 2:
                raw = wire.read_bytes(wire.varint(value_end), value_end, "a tag")
                try:
                    tag = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise CheckpointError(
                        f"{self.path} is not a MindSpore checkpoint: the record at byte "
                        f"{start} has a tag that is not text"
                    ) from None
            elif field == 2 and wire_type == 2:
                length = wire.varint(value_end)
                entry = self._parse_tensor(wire, self._fh.tell() + length, start)
            elif field == 3 and wire_type == 2:
                length = wire.varint(value_end)
                # map tensors (embedding tables of recommender nets) are not weights of SVD
                self._fh.seek(self._fh.tell() + length)
                entry = None
                tag = tag or f"<map tensor at byte {start}>"
                self.non_tensors[tag] = "map tensor"
            else:
                wire.skip(wire_type, value_end)
        if tag is None:
            raise CheckpointError(
                f"{self.path} is not a MindSpore checkpoint: the record at byte {start} has no tag"
            )
        if entry is not None:
            entry.tag = tag
        return tag, entry

    def _parse_tensor(self, wire: _WireReader, tensor_end: int, start: int) -> _CkptEntry:
        assert self._fh is not None
        dims: List[int] = []
        tensor_type: Optional[str] = None
        segments: List[Tuple[int, int]] = []
        while self._fh.tell() < tensor_end:
            key = wire.varint(tensor_end)
            field, wire_type = key >> 3, key & 7
            if field == 1 and wire_type == 0:
                dims.append(_signed64(wire.varint(tensor_end)))
            elif field == 1 and wire_type == 2:  # packed dims
                packed_end = self._fh.tell() + wire.varint(tensor_end)
                while self._fh.tell() < packed_end:
                    dims.append(_signed64(wire.varint(packed_end)))
            elif field == 2 and wire_type == 2:
                raw = wire.read_bytes(wire.varint(tensor_end), tensor_end, "a tensor_type")
                tensor_type = raw.decode("utf-8", errors="replace")
            elif field == 3 and wire_type == 2:
                length = wire.varint(tensor_end)
                offset = self._fh.tell()
                if offset + length > tensor_end:
                    raise wire._truncated("tensor_content")
                segments.append((offset, length))
                self._fh.seek(offset + length)
            else:
                wire.skip(wire_type, tensor_end)
        if tensor_type is None:
            raise CheckpointError(
                f"{self.path} is not a MindSpore checkpoint: the record at byte {start} "
                "has a tensor without tensor_type"
            )
        if any(d < 0 for d in dims):
            raise CheckpointError(
                f"{self.path}: the record at byte {start} has negative dims {dims}"
            )
        return _CkptEntry("", tuple(dims), tensor_type, segments)

    def read(self, name: str) -> np.ndarray:
        info = self._info(name)
        if self._fh is None:
            raise CheckpointError(f"{self.path} is closed")
        array = np.empty(info.numel, dtype=_SAFETENSORS_DTYPES[info.dtype])
        view = memoryview(array).cast("B")
        position = 0
        for offset, length in self._entries[name].segments:
            self._fh.seek(offset)
            _readinto_exact(
                self._fh, view[position : position + length], self.path, f"tensor {name!r}"
            )
            position += length
        if info.dtype == "BF16":
            array = bf16_bits_to_float32(array)
        return array.reshape(info.shape)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


# ---------------------------------------------------------------------------------------------
# torch .pt / .ckpt / .bin
# ---------------------------------------------------------------------------------------------
_TORCH_DTYPES = {
    "torch.float64": "F64",
    "torch.float32": "F32",
    "torch.float16": "F16",
    "torch.bfloat16": "BF16",
    "torch.int64": "I64",
    "torch.int32": "I32",
    "torch.int16": "I16",
    "torch.int8": "I8",
    "torch.uint8": "U8",
    "torch.bool": "BOOL",
}


class TorchFile(TensorFile):
    """A torch checkpoint opened with ``torch.load(weights_only=True, mmap=True)``.

    ``weights_only`` refuses arbitrary pickled objects (safe to open untrusted files); ``mmap``
    keeps tensor data on disk until read. A ``state_dict`` key (Lightning / sgm training
    checkpoints) is unwrapped. Files in torch's legacy (non-zip) format cannot be memory-mapped
    and are loaded whole.
    """

    format_name = "torch checkpoint"

    def __init__(self, path: PathLike) -> None:
        super().__init__(Path(path))
        try:
            import torch
        except ImportError:
            raise CheckpointError(
                f"{self.path} is a torch checkpoint, and reading it needs PyTorch, which is not "
                "installed; install torch or convert the file to safetensors first"
            ) from None
        self._torch = torch
        state = self._load(torch)
        if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
            for key, value in state.items():
                if key != "state_dict":
                    self.non_tensors[str(key)] = "training metadata next to state_dict"
            state = state["state_dict"]
        if not isinstance(state, Mapping):
            raise CheckpointError(
                f"{self.path}: expected a dict of tensors (a state dict), found "
                f"{type(state).__name__}"
            )
        self._tensors: Dict[str, Any] = {}
        for key, value in state.items():
            name = str(key)
            if isinstance(value, torch.Tensor):
                dtype = _TORCH_DTYPES.get(str(value.dtype))
                if dtype is None:
                    self.non_tensors[name] = f"unsupported dtype {value.dtype}"
                    continue
                self._tensors[name] = value
                self.infos[name] = TensorInfo(name, tuple(value.shape), dtype)
            else:
                self.non_tensors[name] = type(value).__name__

    def _load(self, torch: Any) -> Any:
        import pickle
        import zipfile

        mmap = zipfile.is_zipfile(self.path)
        try:
            return torch.load(self.path, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as exc:
            raise CheckpointError(
                f"{self.path}: torch refused to load it with weights_only=True (it pickles objects "
                f"other than tensors: {str(exc).splitlines()[0][:200]}); "
                "save its state_dict alone, or "
                "as safetensors"
            ) from None
        except Exception as exc:  # torch raises RuntimeError/EOFError/... for damaged files
            raise CheckpointError(
                f"{self.path} is not a readable torch checkpoint: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            ) from None

    def read(self, name: str) -> np.ndarray:
        self._info(name)
        tensor = self._tensors[name].detach()
        if tensor.dtype == self._torch.bfloat16:
            tensor = tensor.to(self._torch.float32)
        return tensor.contiguous().numpy()

    def close(self) -> None:
        self._tensors = {}


class MergedTensorFile(TensorFile):
    """Several tensor files seen as one (a sharded diffusers component)."""

    format_name = "sharded checkpoint"

    def __init__(self, path: PathLike, parts: Sequence[TensorFile]) -> None:
        super().__init__(Path(path))
        self._parts = list(parts)
        self._owner: Dict[str, TensorFile] = {}
        for part in self._parts:
            for name, info in part.infos.items():
                if name in self._owner:
                    self.close()
                    raise CheckpointError(
                        f"{self.path}: tensor {name!r} is in both {self._owner[name].path} "
                        f"and {part.path}"
                    )
                self._owner[name] = part
                self.infos[name] = info
            self.non_tensors.update(part.non_tensors)

    def read(self, name: str) -> np.ndarray:
        self._info(name)
        return self._owner[name].read(name)

    def close(self) -> None:
        for part in self._parts:
            part.close()


# ---------------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------------
def sniff_file(path: PathLike) -> str:
    """'safetensors', 'torch' or 'mindspore' from the first bytes; CheckpointError otherwise."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
            size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and 0 < header_len <= size - 8:
            return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        return "torch"  # torch's zip format
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "torch"  # torch's legacy pickle format (pickle protocol 2..5)
    if head[:1] == b"\x0a" and len(head) > 3:
        return "mindspore"  # protobuf field 1, length-delimited: a Checkpoint.value record
    described = _describe_magic(head)
    raise CheckpointError(
        f"{path} is not a checkpoint svdeploy can read ({described}); expected a safetensors file, "
        "a torch .pt/.ckpt, a MindSpore .ckpt, or a directory"
    )


def _describe_magic(head: bytes) -> str:
    known = {
        b"\x89PNG": "it is a PNG image",
        b"\xff\xd8\xff": "it is a JPEG image",
        b"GIF8": "it is a GIF image",
        b"%PDF": "it is a PDF",
        b"\x1f\x8b": "it is gzip-compressed",
    }
    for magic, text in known.items():
        if head.startswith(magic):
            return text
    if not head:
        return "it is empty"
    return f"it starts with bytes {head[:8].hex(' ')}"


def open_tensor_file(path: PathLike) -> TensorFile:
    """Open a tensor file by its content (not its extension)."""
    kind = sniff_file(path)
    if kind == "safetensors":
        return SafetensorsFile(path)
    if kind == "torch":
        return TorchFile(path)
    return MindsporeCkptFile(path)


def iter_float32(tensor_file: TensorFile, names: Iterable[str]) -> Iterable[Tuple[str, np.ndarray]]:
    for name in names:
        yield name, tensor_file.read_float32(name)
