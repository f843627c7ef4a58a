"""GGUF fuzzing: mutated headers of real GGUF files through gemma-edge's validating reader.

Each mutation starts from a real file (the embedded 270M, converted tiny models, an mmproj) and breaks
it the way a bad download, a buggy writer or an attacker would: huge string and array lengths, wrong
value and tensor types, boundary values in counts, dimensions and offsets, zeroed runs, random bit
flips, truncation at a random offset in the header or in the data. Fields are found from the reader's
own view of the seed (each key and tensor name is searched for in order), so mutations hit real field
boundaries as well as random bytes. Mutations are applied in place to one copy of the seed (a
copy-on-write map for big files) and undone after each read: a campaign never writes a file.

A read either returns a GGUFFile (whose tensors must lie inside the file) or raises InvalidModelError;
anything else is a crash and is reported with its traceback.

    python -m bench.fuzz_gguf [--count 100000] [--seed 0] [FILE ...]
    (default seeds: the embedded model and, when the test cache has them, the converted tiny models of
    every generation and an mmproj: tests/runtime/fuzz_seeds.py)
"""
from __future__ import annotations

import argparse
import mmap
import re
import struct
import sys
import time
import traceback
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gemma_edge.errors import InvalidModelError
from gemma_edge.gguf_file import ARRAY, SCALAR_FORMATS, STRING, ArrayRef, GGUFFile
from gemma_edge.gguf_keys import check_vocabulary

HUGE = (1 << 64) - 1


@dataclass
class Fields:
    """Where a seed's fields are: (offset, byte size) per role."""
    lengths: list[tuple[int, int]] = field(default_factory=list)  # string lengths, array counts (u64)
    types: list[tuple[int, int]] = field(default_factory=list)  # value types, element types, tensor types (u32)
    values: list[tuple[int, int]] = field(default_factory=list)  # scalar values
    dims: list[tuple[int, int]] = field(default_factory=list)  # tensor dimension counts (u32) and dimensions (i64)
    offsets: list[tuple[int, int]] = field(default_factory=list)  # tensor data offsets (u64)


@dataclass
class Seed:
    name: str
    data: bytearray | mmap.mmap  # mutated in place, restored after each read
    header_end: int  # where the data section starts
    fields: Fields
    weight: float = 1.0  # its share of a campaign's reads, relative to the other seeds


BIG_SEED = 64 << 20  # bytes: mapped copy-on-write instead of copied
BIG_SEED_WEIGHT = 0.05  # a big real model's full read (262k-token vocabulary) takes ~100x a tiny one's


def load_seed(path: Path, name: str | None = None) -> Seed:
    """A seed from a GGUF file: small files are copied into memory, big ones mapped copy-on-write."""
    with open(path, "rb") as f:
        size = Path(path).stat().st_size
        data = bytearray(f.read()) if size < BIG_SEED else mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    gguf = GGUFFile.from_buffer(data, path)
    return Seed(name or Path(path).name, data, gguf.data_start, field_map(data, gguf),
                1.0 if size < BIG_SEED else BIG_SEED_WEIGHT)


def field_map(data, gguf: GGUFFile) -> Fields:
    """Find each key and tensor record in order (its length-prefixed name) and note its fields."""
    fields, pos = Fields(), 24
    for key, value in gguf.metadata.items():
        pos = data.find(struct.pack("<Q", len(key.encode())) + key.encode(), pos)
        fields.lengths.append((pos, 8))
        pos += 8 + len(key.encode())
        vtype = gguf.value_types[key]
        fields.types.append((pos, 4))
        pos += 4
        if isinstance(value, ArrayRef):
            fields.types.append((pos, 4))
            fields.lengths.append((pos + 4, 8))
            if value.item_type == STRING and value.count:
                fields.lengths.append((value.start, 8))  # the first element's length
            pos = value.end
        elif vtype == STRING:
            fields.lengths.append((pos, 8))
            pos += 8 + len(value.encode())
        else:
            fields.values.append((pos, struct.calcsize(SCALAR_FORMATS[vtype])))
            pos += struct.calcsize(SCALAR_FORMATS[vtype])
    for tensor in gguf.tensors:
        name = tensor.name.encode()
        pos = data.find(struct.pack("<Q", len(name)) + name, pos)
        fields.lengths.append((pos, 8))
        pos += 8 + len(name)
        fields.dims.append((pos, 4))
        fields.dims.extend((pos + 4 + 8 * i, 8) for i in range(len(tensor.shape)))
        pos += 4 + 8 * len(tensor.shape)
        fields.types.append((pos, 4))
        fields.offsets.append((pos + 4, 8))
        pos += 12
    return fields


# -- mutations: each gives (patches [(offset, bytes)], truncated length or None) --------------------------

def _pick(rng, spots):
    return spots[rng.integers(len(spots))] if spots else None


def _u(value: int, size: int) -> bytes:
    return (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


def huge_length(rng, seed: Seed):
    pos, _ = _pick(rng, seed.fields.lengths)
    choices = [HUGE, 1 << 63, int(rng.integers(1 << 32, 1 << 62)), len(seed.data) - pos + int(rng.integers(0, 64)),
               int(rng.integers(0, 1 << 16))]
    return [(pos, _u(choices[rng.integers(len(choices))], 8))], None


def wrong_type(rng, seed: Seed):
    pos, _ = _pick(rng, seed.fields.types)
    choices = [int(rng.integers(0, 14)), ARRAY, STRING, int(rng.integers(14, 1 << 32)), 0xFFFFFFFF]
    return [(pos, _u(choices[rng.integers(len(choices))], 4))], None


def boundary_value(rng, seed: Seed):
    spots = seed.fields.values + seed.fields.dims + seed.fields.offsets
    pos, size = _pick(rng, spots)
    choices = [0, 1, HUGE, 1 << (8 * size - 1), (1 << (8 * size - 1)) - 1, int(rng.integers(0, 1 << 62)),
               int.from_bytes(bytes(seed.data[pos:pos + size]), "little") + int(rng.integers(-64, 65))]
    return [(pos, _u(choices[rng.integers(len(choices))], size))], None


def zero_run(rng, seed: Seed):
    start = int(rng.integers(4, seed.header_end))
    n = int(min(rng.integers(1, 4097), len(seed.data) - start))
    return [(start, bytes(n))], None


def bit_flips(rng, seed: Seed):
    spots = rng.integers(4, seed.header_end, size=int(rng.integers(1, 17)))
    return [(int(p), bytes([seed.data[p] ^ (1 << int(rng.integers(8)))])) for p in spots], None


def data_flips(rng, seed: Seed):
    if len(seed.data) <= seed.header_end:
        return bit_flips(rng, seed)
    spots = rng.integers(seed.header_end, len(seed.data), size=int(rng.integers(1, 17)))
    return [(int(p), bytes([seed.data[p] ^ 0xFF])) for p in spots], None


def truncate_header(rng, seed: Seed):
    return [], int(rng.integers(0, seed.header_end))


def truncate_data(rng, seed: Seed):
    return [], int(rng.integers(seed.header_end, len(seed.data))) if len(seed.data) > seed.header_end else None


MUTATIONS = (huge_length, wrong_type, boundary_value, zero_run, bit_flips, data_flips, truncate_header,
             truncate_data)


# -- reading a mutated seed ------------------------------------------------------------------------------

def read(buffer, name: str) -> GGUFFile:
    """The reader as the runtime uses it: the header, then the vocabulary check before llama.cpp."""
    gguf = GGUFFile.from_buffer(buffer, name)
    check_vocabulary(gguf)
    return gguf


def error_kind(error: InvalidModelError) -> str:
    """The message without the path, names, numbers and details: what kind of rule was broken."""
    text = str(error).split(": ", 1)[-1]
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "…", text)
    text = re.sub(r"\(.*?\)", "", text)
    text = re.sub(r"-?\d[\d,]*(\.\d+)?(e-?\d+)?", "N", text)
    return re.sub(r"\s+", " ", text).strip()[:70]


def check_returned(gguf: GGUFFile, size: int) -> None:
    """What a returned GGUFFile promises: every tensor's data inside the file."""
    for t in gguf.tensors:
        assert gguf.data_start + t.offset + t.n_bytes <= size, (t, size)


@contextmanager
def apply_mutations(rng, seed: Seed, mutations=MUTATIONS):
    """Mutate the seed in place (one mutation, or 2-3 stacked one time in five) and yield the mutated file
    as a memoryview; the seed is restored afterwards."""
    patches, length = [], None
    for _ in range(1 if rng.random() < 0.8 else int(rng.integers(2, 4))):
        more, cut = mutations[rng.integers(len(mutations))](rng, seed)
        patches += more
        length = cut if cut is not None and (length is None or cut < length) else length
    saved = [(pos, bytes(seed.data[pos:pos + len(new)])) for pos, new in patches]
    for pos, new in patches:
        seed.data[pos:pos + len(new)] = new[:len(seed.data) - pos]
    view = memoryview(seed.data)[:len(seed.data) if length is None else length]
    try:
        yield view
    finally:
        view.release()
        for pos, old in reversed(saved):
            seed.data[pos:pos + len(old)] = old


def mutate_and_read(rng, seed: Seed, mutations=MUTATIONS) -> tuple[str, str | None]:
    """One mutated read: ("returned", None), ("rejected", kind) or ("crash", traceback)."""
    with apply_mutations(rng, seed, mutations) as view:
        try:
            gguf = read(view, seed.name)
            check_returned(gguf, len(view))
            return "returned", None
        except InvalidModelError as e:
            return "rejected", error_kind(e)
        except Exception:  # noqa: BLE001 — the point: anything else is a crash to report
            return "crash", traceback.format_exc()


@dataclass
class Campaign:
    returned: int = 0
    rejected: Counter = field(default_factory=Counter)
    crashes: list[str] = field(default_factory=list)
    per_seed: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return self.returned + sum(self.rejected.values()) + len(self.crashes)


def run_campaign(seeds: list[Seed], count: int, seed: int = 0, campaign: Campaign | None = None) -> Campaign:
    """`count` mutated reads spread over `seeds` by weight, from one seeded RNG (deterministic)."""
    rng = np.random.default_rng(seed)
    weights = np.array([s.weight for s in seeds])
    picks = rng.choice(len(seeds), size=count, p=weights / weights.sum())
    campaign = campaign or Campaign()
    for i in picks:
        campaign.per_seed[seeds[i].name] += 1
        outcome, detail = mutate_and_read(rng, seeds[i])
        if outcome == "returned":
            campaign.returned += 1
        elif outcome == "rejected":
            campaign.rejected[detail] += 1
        else:
            campaign.crashes.append(detail)
    return campaign


def report(campaign: Campaign, seconds: float, seeds: list[Seed]) -> str:
    lines = [f"{campaign.total:,} mutated reads in {seconds:.0f} s: "
             + ", ".join(f"{n:,} of {name}" for name, n in campaign.per_seed.items()),
             f"  returned (file still well-formed): {campaign.returned:,}",
             f"  rejected with InvalidModelError:   {sum(campaign.rejected.values()):,}",
             f"  crashes (any other exception):     {len(campaign.crashes):,}",
             "  rejections by kind:"]
    lines += [f"    {n:>8,}  {kind}" for kind, n in campaign.rejected.most_common()]
    lines += [f"crash:\n{c}" for c in campaign.crashes[:5]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="*", type=Path, help="seed GGUF files (default: the embedded model)")
    p.add_argument("--count", type=int, default=100_000, help="mutated reads (default 100,000)")
    p.add_argument("--seed", type=int, default=0, help="RNG seed (default 0)")
    args = p.parse_args(argv)
    if not args.files:
        from gemma_edge.registry import embedded_model_path
        from tests.runtime.fuzz_seeds import seed_files

        args.files = [embedded_model_path(), *seed_files()]
    seeds = [load_seed(path) for path in args.files]
    started = time.perf_counter()
    campaign = run_campaign(seeds, args.count, args.seed)
    print(report(campaign, time.perf_counter() - started, seeds))
    return 1 if campaign.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
