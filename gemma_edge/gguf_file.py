"""A fast, validating reader for GGUF headers: metadata and tensor layout, without loading weights.

gguf-py's GGUFReader parses every array element into numpy views (seconds for a 262k-token vocab);
`info`, generation detection and the memory check only need scalars, a few token look-ups and the
tensor extents, so this reads those and leaves big arrays as byte ranges until asked.

It is also the gate in front of llama.cpp: every GGUF the runtime, the quantizer or mtmd opens is read
here first. Every length, count, type and offset is checked against the format and the file's size
before it is used (the rules of llama.cpp's gguf.cpp: string and array bounds, no nested arrays, unique
keys and tensor names, at most 4 dimensions, known tensor types with whole blocks per row, tensors laid
out back to back at the file's alignment), every tensor's data must lie inside the file, and the keys
llama.cpp reads without checking must have the type and range it assumes (gemma_edge/gguf_keys.py).
A file that breaks a rule raises InvalidModelError naming the rule; nothing else escapes.
"""
from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from gemma_edge.errors import InvalidModelError
from gemma_edge.gguf_keys import ARRAY, SCALAR_FORMATS, STRING, check_keys

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NAME = 64  # GGML_MAX_NAME: a tensor name is shorter
MAX_STRING = 1 << 30  # GGUF_MAX_STRING_LENGTH
INT64_MAX = (1 << 63) - 1
_ALIGNMENT_KEY = "general.alignment"
_KV_MIN_BYTES = 8 + 4 + 1  # key length, value type, the smallest value
_TENSOR_MIN_BYTES = 8 + 4 + 4 + 8  # name length, n_dims, type, offset


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order (ne0 first)
    ggml_type: int
    offset: int  # relative to the data section
    n_bytes: int


@dataclass(frozen=True)
class ArrayRef:
    """An array value not decoded yet: element type, count and where its elements start."""
    item_type: int
    count: int
    start: int
    end: int


class _Cursor:
    """Reads little-endian GGUF fields from a buffer (mmap, bytes, memoryview), refusing any read past its end."""

    def __init__(self, data, path: Path, pos: int = 0):
        self.data, self.size, self.pos, self.path = data, len(data), pos, path

    def corrupt(self, what: str) -> InvalidModelError:
        return InvalidModelError(f"{self.path}: corrupt GGUF header: {what} (at byte {self.pos:,})")

    def skip(self, n: int, what: str = "a field") -> int:
        """Advance past `n` bytes; returns where they start."""
        if n > self.size - self.pos:
            raise InvalidModelError(f"{self.path}: truncated GGUF header: {what} needs {n:,} bytes at byte "
                                    f"{self.pos:,} but the file ends at byte {self.size:,}")
        start = self.pos
        self.pos += n
        return start

    def scalar(self, fmt: str, what: str = "a field"):
        return struct.unpack_from(fmt, self.data, self.skip(struct.calcsize(fmt), what))[0]

    def string(self, what: str = "a string") -> str:
        n = self.scalar("<Q", what)
        if n > MAX_STRING:
            raise self.corrupt(f"{what} claims {n:,} bytes (at most {MAX_STRING:,})")
        start = self.skip(n, what)
        return bytes(self.data[start:self.pos]).decode("utf-8", errors="replace")

    def count(self, what: str, min_bytes: int) -> int:
        """A uint64 count of items of at least `min_bytes` each, checked against the bytes left."""
        n = self.scalar("<Q", what)
        if n * min_bytes > self.size - self.pos:
            raise InvalidModelError(f"{self.path}: corrupt or truncated GGUF header: {what} is {n:,}, more than "
                                    f"the {self.size - self.pos:,} bytes left after byte {self.pos:,} can hold")
        return n

    def skip_strings(self, count: int) -> None:
        pos, size, data, unpack = self.pos, self.size, self.data, struct.unpack_from
        for _ in range(count):
            if pos + 8 > size:
                pos = size + 1
                break
            pos += 8 + unpack("<Q", data, pos)[0]
        if pos > size:
            raise InvalidModelError(f"{self.path}: truncated GGUF header: a string array that starts at byte "
                                    f"{self.pos:,} runs past the end of the file ({size:,} bytes)")
        self.pos = pos


class GGUFFile:
    """Metadata and tensor layout of a GGUF file, validated against the format and the file's size."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise InvalidModelError(f"{self.path}: no such file")
        with open(self.path, "rb") as f:
            if f.read(4) != MAGIC:
                raise InvalidModelError(f"{self.path}: not a GGUF file (wrong magic bytes)")
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._parse(self._map)  # on failure the map closes with this object

    @classmethod
    def from_buffer(cls, data, path: str | os.PathLike = "<buffer>") -> GGUFFile:
        """Read a GGUF held in memory (any buffer: bytes, bytearray, mmap); its length is the file size."""
        self = cls.__new__(cls)
        self.path, self._map = Path(path), None
        if bytes(data[:4]) != MAGIC:
            raise InvalidModelError(f"{self.path}: not a GGUF file (wrong magic bytes)")
        self._parse(data)
        return self

    def _parse(self, data) -> None:
        self._data = data
        self.file_size = len(data)
        cur = _Cursor(data, self.path, 4)
        self.version = cur.scalar("<I", "the version")
        if self.version not in VERSIONS:
            raise InvalidModelError(f"{self.path}: unsupported GGUF version {self.version}")
        n_tensors = cur.scalar("<Q", "the tensor count")
        n_kv = cur.count("the metadata key count", _KV_MIN_BYTES)
        self.metadata: dict[str, object] = {}
        self.value_types: dict[str, int] = {}  # key -> GGUF value type (arrays: ARRAY; see ArrayRef.item_type)
        for _ in range(n_kv):
            key = cur.string("a metadata key")
            if not key:
                raise cur.corrupt("an empty metadata key")
            if key in self.metadata:
                raise cur.corrupt(f"metadata key {_shown(key)} appears twice")
            vtype = cur.scalar("<I", f"the type of {_shown(key)}")
            self.value_types[key] = vtype
            self.metadata[key] = self._read_value(cur, key, vtype)
        self.alignment = self._alignment()
        if n_tensors * _TENSOR_MIN_BYTES > self.file_size - cur.pos:
            raise InvalidModelError(f"{self.path}: corrupt or truncated GGUF header: {n_tensors:,} tensors do "
                                    f"not fit in the {self.file_size - cur.pos:,} bytes after byte {cur.pos:,}")
        headers = [self._read_tensor_info(cur) for _ in range(n_tensors)]
        names = {name for name, *_ in headers}
        if len(names) != len(headers):
            raise cur.corrupt("two tensors have the same name")
        self.data_start = _pad(cur.pos, self.alignment)
        self.tensors = self._lay_out(headers)
        check_keys(self)

    def _read_value(self, cur: _Cursor, key: str, vtype: int):
        if vtype in SCALAR_FORMATS:
            return cur.scalar(SCALAR_FORMATS[vtype], f"the value of {_shown(key)}")
        if vtype == STRING:
            return cur.string(f"the value of {_shown(key)}")
        if vtype != ARRAY:
            raise cur.corrupt(f"{_shown(key)} has value type {vtype}, which GGUF does not define")
        item_type = cur.scalar("<I", f"the element type of {_shown(key)}")
        if item_type == STRING:
            count = cur.count(f"the length of {_shown(key)}", 8)
            start = cur.pos
            cur.skip_strings(count)
        elif item_type in SCALAR_FORMATS:
            item_size = struct.calcsize(SCALAR_FORMATS[item_type])
            count = cur.count(f"the length of {_shown(key)}", item_size)
            start = cur.skip(item_size * count, f"the elements of {_shown(key)}")
        else:
            raise cur.corrupt(f"array {_shown(key)} has element type {item_type} (nested arrays and unknown types "
                              "are not GGUF)")
        return ArrayRef(item_type, count, start, cur.pos)

    def _alignment(self) -> int:
        if _ALIGNMENT_KEY not in self.metadata:
            return DEFAULT_ALIGNMENT
        value = self.metadata[_ALIGNMENT_KEY]
        if self.value_types[_ALIGNMENT_KEY] != 4 or not value or value & (value - 1):
            raise InvalidModelError(f"{self.path}: corrupt GGUF header: {_ALIGNMENT_KEY} must be a uint32 power "
                                    f"of two, not {value!r}")
        return value

    def _read_tensor_info(self, cur: _Cursor) -> tuple[str, tuple[int, ...], int, int]:
        name = cur.string("a tensor name")
        if len(name.encode("utf-8", errors="replace")) >= MAX_NAME:
            raise cur.corrupt(f"tensor name {_shown(name)} is longer than {MAX_NAME - 1} bytes")
        n_dims = cur.scalar("<I", f"the dimension count of {_shown(name)}")
        if n_dims > MAX_DIMS:
            raise cur.corrupt(f"tensor {_shown(name)} has {n_dims} dimensions (at most {MAX_DIMS})")
        shape = struct.unpack_from(f"<{n_dims}q", cur.data, cur.skip(8 * n_dims, f"the shape of {_shown(name)}"))
        if any(d < 0 for d in shape):
            raise cur.corrupt(f"tensor {_shown(name)} has a negative dimension {shape}")
        if _elements(shape) > INT64_MAX:
            raise cur.corrupt(f"tensor {_shown(name)} has too many elements {shape}")
        ggml_type = cur.scalar("<I", f"the type of {_shown(name)}")
        offset = cur.scalar("<Q", f"the data offset of {_shown(name)}")
        return name, shape, ggml_type, offset

    def _lay_out(self, headers) -> list[TensorInfo]:
        """Tensor extents, checked as llama.cpp lays them out: back to back, each padded to the alignment,
        the whole data section inside the file."""
        tensors, expected = [], 0
        for name, shape, ggml_type, offset in headers:
            n_bytes = _tensor_bytes(name, shape, ggml_type, self.path)
            if offset != expected:
                raise InvalidModelError(f"{self.path}: corrupt GGUF header: tensor {_shown(name)} starts at data "
                                        f"offset {offset:,}, expected {expected:,}")
            tensors.append(TensorInfo(name, shape, ggml_type, offset, n_bytes))
            expected += _pad(n_bytes, self.alignment)
        if not tensors:
            return tensors
        end = self.data_start + tensors[-1].offset + tensors[-1].n_bytes
        if end > self.file_size:
            raise InvalidModelError(
                f"{self.path}: truncated GGUF ({self.file_size:,} bytes, its tensors need {end:,}); "
                "download or convert it again")
        return tensors

    def get(self, key: str, default=None):
        value = self.metadata.get(key, default)
        return default if isinstance(value, ArrayRef) else value

    def arch_get(self, key: str, default=None):
        """`{architecture}.{key}`, e.g. arch_get("block_count")."""
        return self.get(f"{self.architecture}.{key}", default)

    @property
    def architecture(self) -> str:
        return str(self.get("general.architecture", ""))

    def array(self, key: str) -> list:
        """Decode an array value (scalars or strings)."""
        ref = self.metadata.get(key)
        if not isinstance(ref, ArrayRef):
            return []
        if ref.item_type == STRING:
            return list(self._strings(ref))
        fmt = SCALAR_FORMATS[ref.item_type]
        return list(struct.unpack_from(f"<{ref.count}{fmt[1]}", self._data, ref.start))

    def _strings(self, ref: ArrayRef):
        """The elements of a string array (their bounds were checked when the header was read)."""
        cur = _Cursor(self._data, self.path, ref.start)
        for _ in range(ref.count):
            yield cur.string()

    def string_bytes(self, key: str) -> list[bytes]:
        """The raw elements of a string array, undecoded (e.g. to compare tokens byte for byte)."""
        ref = self.metadata.get(key)
        if not isinstance(ref, ArrayRef) or ref.item_type != STRING:
            return []
        data, unpack, pos, out = self._data[ref.start:ref.end], struct.Struct("<Q").unpack_from, 0, []
        append = out.append
        for _ in range(ref.count):
            n = unpack(data, pos)[0]
            append(bytes(data[pos + 8:pos + 8 + n]))
            pos += 8 + n
        return out

    def string_at(self, key: str, index: int) -> str | None:
        """One element of a string array (e.g. a token's text) without decoding the elements before it."""
        ref = self.metadata.get(key)
        if not isinstance(ref, ArrayRef) or ref.item_type != STRING or not 0 <= index < ref.count:
            return None
        cur = _Cursor(self._data, self.path, ref.start)
        cur.skip_strings(index)
        return cur.string()

    def array_length(self, key: str) -> int:
        ref = self.metadata.get(key)
        return ref.count if isinstance(ref, ArrayRef) else 0

    def array_type(self, key: str) -> int | None:
        ref = self.metadata.get(key)
        return ref.item_type if isinstance(ref, ArrayRef) else None

    def has_token(self, text: str) -> bool:
        """Whether the vocabulary holds exactly this token string (a byte search, no decoding)."""
        ref = self.metadata.get("tokenizer.ggml.tokens")
        if not isinstance(ref, ArrayRef) or ref.item_type != STRING:
            return False
        raw = text.encode("utf-8")
        needle = struct.pack("<Q", len(raw)) + raw
        if hasattr(self._data, "find"):  # mmap, bytes, bytearray: search in place
            return self._data.find(needle, ref.start, ref.end) != -1
        return needle in bytes(self._data[ref.start:ref.end])

    @property
    def weights_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    @property
    def parameter_count(self) -> int:
        return sum(_elements(t.shape) for t in self.tensors)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()


def _shown(name: str) -> str:
    """A key or tensor name for a one-line message: quoted, escaped, at most 60 characters."""
    return repr(name if len(name) <= 60 else name[:60] + "…")


def _pad(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


def _elements(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _tensor_bytes(name: str, shape: tuple[int, ...], ggml_type: int, path: Path) -> int:
    """Bytes of a tensor by ggml's block sizes; its rows must hold whole blocks."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        raise InvalidModelError(f"{path}: tensor {_shown(name)} has unknown type {ggml_type} "
                                "(newer llama.cpp?)") from None
    if shape and shape[0] % block:
        raise InvalidModelError(f"{path}: corrupt GGUF header: tensor {_shown(name)} rows of {shape[0]} elements "
                                f"are not whole blocks of {block}")
    return _elements(shape) // block * type_size
