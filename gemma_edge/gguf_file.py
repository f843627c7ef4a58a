"""A fast, validating reader for GGUF headers: metadata and tensor layout, without loading weights.

gguf-py's GGUFReader parses every array element into numpy views (seconds for a 262k-token vocab);
`info`, generation detection and the memory check only need scalars, a few token look-ups and the
tensor extents, so this reads those and leaves big arrays as byte ranges until asked.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from gemma_edge.errors import InvalidModelError

MAGIC = b"GGUF"
_SCALARS = {  # GGUF value type -> struct format
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d",
}
_STRING, _ARRAY = 8, 9
_ALIGNMENT_KEY = "general.alignment"


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
    def __init__(self, data: bytes | memoryview, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise InvalidModelError(f"{self.path}: truncated GGUF header (file ends at byte {len(self.data)})")
        view = memoryview(self.data)[self.pos:self.pos + n]
        self.pos += n
        return view

    def scalar(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.scalar("<Q")
        return bytes(self.take(n)).decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        pos, data, unpack = self.pos, self.data, struct.unpack_from
        try:
            for _ in range(count):
                pos += 8 + unpack("<Q", data, pos)[0]
        except struct.error:
            pos = len(data) + 1
        if pos > len(data):
            raise InvalidModelError(f"{self.path}: truncated GGUF header (file ends at byte {len(data)})")
        self.pos = pos

    def skip_value(self, vtype: int) -> None:
        if vtype in _SCALARS:
            self.take(struct.calcsize(_SCALARS[vtype]))
        elif vtype == _STRING:
            self.take(self.scalar("<Q"))
        elif vtype == _ARRAY:
            item_type, count = self.scalar("<I"), self.scalar("<Q")
            if item_type in _SCALARS:
                self.take(struct.calcsize(_SCALARS[item_type]) * count)
            else:
                for _ in range(count):
                    self.skip_value(item_type)
        else:
            raise InvalidModelError(f"{self.path}: corrupt GGUF metadata (value type {vtype})")


class GGUFFile:
    """Metadata and tensor layout of a GGUF file, validated against the file's size."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise InvalidModelError(f"{self.path}: no such file")
        self.file_size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            if f.read(4) != MAGIC:
                raise InvalidModelError(f"{self.path}: not a GGUF file (wrong magic bytes)")
            f.seek(0)
            import mmap
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        cur = _Cursor(self._map, self.path)
        cur.take(4)
        self.version = cur.scalar("<I")
        if self.version not in (2, 3):
            raise InvalidModelError(f"{self.path}: unsupported GGUF version {self.version}")
        n_tensors, n_kv = cur.scalar("<Q"), cur.scalar("<Q")
        if n_tensors > 10_000_000 or n_kv > 10_000_000:
            raise InvalidModelError(f"{self.path}: corrupt GGUF header")
        self.metadata: dict[str, object] = {}
        for _ in range(n_kv):
            key, vtype = cur.string(), cur.scalar("<I")
            self.metadata[key] = self._read_value(cur, vtype)
        tensors = []
        for _ in range(n_tensors):
            name = cur.string()
            n_dims = cur.scalar("<I")
            shape = tuple(cur.scalar("<Q") for _ in range(n_dims))
            ggml_type, offset = cur.scalar("<I"), cur.scalar("<Q")
            tensors.append((name, shape, ggml_type, offset))
        alignment = int(self.metadata.get(_ALIGNMENT_KEY, 32))
        self.data_start = (cur.pos + alignment - 1) // alignment * alignment
        self.tensors = [TensorInfo(n, s, t, o, _tensor_bytes(s, t, self.path)) for n, s, t, o in tensors]
        end = max((t.offset + t.n_bytes + self.data_start for t in self.tensors), default=0)
        if end > self.file_size:
            raise InvalidModelError(
                f"{self.path}: truncated GGUF ({self.file_size:,} bytes, its tensors need {end:,}); "
                "download or convert it again")

    def _read_value(self, cur: _Cursor, vtype: int):
        if vtype in _SCALARS:
            return cur.scalar(_SCALARS[vtype])
        if vtype == _STRING:
            return cur.string()
        if vtype == _ARRAY:
            item_type, count = cur.scalar("<I"), cur.scalar("<Q")
            start = cur.pos
            if item_type in _SCALARS:
                cur.take(struct.calcsize(_SCALARS[item_type]) * count)
            elif item_type == _STRING:
                cur.skip_strings(count)
            else:
                for _ in range(count):
                    cur.skip_value(item_type)
            return ArrayRef(item_type, count, start, cur.pos)
        raise InvalidModelError(f"{self.path}: corrupt GGUF metadata (value type {vtype})")

    def get(self, key: str, default=None):
        value = self.metadata.get(key, default)
        return default if isinstance(value, ArrayRef) else value

    def arch_get(self, key: str, default=None):
        """`{architecture}.{key}`, e.g. arch_get("block_count")."""
        return self.get(f"{self.architecture}.{key}", default)

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    def array(self, key: str) -> list:
        """Decode an array value (scalars or strings)."""
        ref = self.metadata.get(key)
        if not isinstance(ref, ArrayRef):
            return [] if ref is None else list(ref)
        cur = _Cursor(self._map, self.path)
        cur.pos = ref.start
        if ref.item_type == _STRING:
            return [cur.string() for _ in range(ref.count)]
        if ref.item_type in _SCALARS:
            fmt = _SCALARS[ref.item_type]
            return list(struct.unpack(f"<{ref.count}{fmt[1]}", cur.take(struct.calcsize(fmt) * ref.count)))
        return [self._read_value(cur, ref.item_type) for _ in range(ref.count)]

    def string_at(self, key: str, index: int) -> str | None:
        """One element of a string array (e.g. a token's text) without decoding the elements before it."""
        ref = self.metadata.get(key)
        if not isinstance(ref, ArrayRef) or ref.item_type != _STRING or not 0 <= index < ref.count:
            return None
        cur = _Cursor(self._map, self.path)
        cur.pos = ref.start
        cur.skip_strings(index)
        return cur.string()

    def array_length(self, key: str) -> int:
        ref = self.metadata.get(key)
        return ref.count if isinstance(ref, ArrayRef) else 0

    def has_token(self, text: str) -> bool:
        """Whether the vocabulary holds exactly this token string (a byte search, no decoding)."""
        ref = self.metadata.get("tokenizer.ggml.tokens")
        if not isinstance(ref, ArrayRef):
            return False
        raw = text.encode("utf-8")
        needle = struct.pack("<Q", len(raw)) + raw
        return self._map.find(needle, ref.start, ref.end) != -1

    @property
    def weights_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    @property
    def parameter_count(self) -> int:
        count = 0
        for t in self.tensors:
            n = 1
            for d in t.shape:
                n *= d
            count += n
        return count

    def close(self) -> None:
        self._map.close()


def _tensor_bytes(shape: tuple[int, ...], ggml_type: int, path: Path) -> int:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        raise InvalidModelError(f"{path}: unknown tensor type {ggml_type} (newer llama.cpp?)") from None
    n = 1
    for d in shape:
        n *= d
    return n // block * type_size
