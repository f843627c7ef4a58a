"""Streaming GGUF writing through gguf-py, into a temporary file renamed into place only on success.

gguf-py's ``GGUFWriter`` writes the header, the key/values and the tensor infos (declared up front with
their final types and byte sizes); the tensor data is then streamed chunk by chunk straight into its
file handle, so no whole tensor is ever held in memory. Any failure — an exception, Ctrl-C, a full
disk — removes the temporary file; an existing output is only replaced when the caller allows it.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter

from convert.generations.base import Field

ALIGNMENT = 32  # GGUF default (general.alignment is not written)


@dataclass
class TensorToWrite:
    name: str
    shape: tuple[int, ...]  # numpy order
    qtype: GGMLQuantizationType
    nbytes: int
    chunks: Callable[[], Iterator[np.ndarray]]  # encoded pieces, in order, summing to nbytes


class OutputExists(FileExistsError):
    pass


def temporary_path(path: Path) -> Path:
    """Same directory as the output, so the final rename is atomic."""
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


def write_gguf(
    path: Path,
    arch: str,
    fields: Sequence[Field],
    tensors: Sequence[TensorToWrite],
    force: bool = False,
    on_tensor: Callable[[TensorToWrite], None] | None = None,
) -> int:
    """Write the GGUF at ``path`` and return its size in bytes."""
    path = Path(path)
    if path.exists() and not force:
        raise OutputExists(f"{path} exists (use --force to overwrite)")
    partial = temporary_path(path)
    writer = GGUFWriter(partial, arch)
    try:
        for item in fields:
            writer.add_key_value(item.key, item.value, item.vtype, item.sub_type)
        for tensor in tensors:
            writer.add_tensor_info(tensor.name, tensor.shape, np.dtype(np.float32), tensor.nbytes, raw_dtype=tensor.qtype)
        writer.write_header_to_file(partial)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        handle = writer.fout[0]
        for tensor in tensors:
            _pad(handle)
            written = _write_chunks(handle, tensor.chunks())
            if written != tensor.nbytes:
                raise RuntimeError(f"{tensor.name}: wrote {written} bytes, expected {tensor.nbytes}")
            if on_tensor is not None:
                on_tensor(tensor)
        _pad(handle)
        handle.flush()
        os.fsync(handle.fileno())
        writer.close()
        size = partial.stat().st_size
        os.replace(partial, path)
        return size
    except OSError as error:
        _discard(writer, partial)
        raise OSError(error.errno, error.strerror, str(path)) from None
    except BaseException:
        _discard(writer, partial)
        raise


def _write_chunks(handle, chunks: Iterable[np.ndarray]) -> int:
    written = 0
    for chunk in chunks:
        data = np.ascontiguousarray(chunk)
        handle.write(memoryview(data).cast("B"))
        written += data.nbytes
    return written


def _pad(handle) -> None:
    remainder = handle.tell() % ALIGNMENT
    if remainder:
        handle.write(bytes(ALIGNMENT - remainder))


def _discard(writer: GGUFWriter, partial: Path) -> None:
    for handle in writer.fout or []:
        try:
            handle.close()
        except OSError:
            pass
    try:
        partial.unlink()
    except FileNotFoundError:
        pass
