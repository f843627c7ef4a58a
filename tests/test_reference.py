"""The vendored reference material (tests/reference/) is exactly what its SOURCES.md files record:
every file listed with its SHA-256, and nothing unlisted that a test could read instead."""
from __future__ import annotations

import hashlib
import re

import pytest

from tests.reference import VENDORED

HASH_LINE = re.compile(r"^([0-9a-f]{64})  (\S+)$", re.MULTILINE)


@pytest.mark.parametrize("folder", ["templates", "vocab"])
def test_vendored_files_match_their_recorded_hashes(folder):
    base = VENDORED / folder
    recorded = {name: digest for digest, name in HASH_LINE.findall((base / "SOURCES.md").read_text(encoding="utf-8"))}
    present = {p.name for p in base.iterdir() if p.name != "SOURCES.md"}
    assert recorded and present == set(recorded)
    for name, digest in recorded.items():
        assert hashlib.sha256((base / name).read_bytes()).hexdigest() == digest, name
