"""The README's design map lists every package and module that exists, and nothing that does not.

The map is the first code block under "## Design": an indented tree whose entries are the names
before the description (`api.py chat.py   what they do`, `formats/   what it holds`); an entry
indented under a package (`pkg/`) lives in that package."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPED = ("gemma_edge", "convert")  # every module and package under these must be on the map
NOT_MAPPED = {"__init__.py", "__main__.py"}


def design_map(readme: str) -> set[str]:
    """Paths named by the map ("gemma_edge/api.py", "gemma_edge/formats/", …)."""
    section = readme.split("\n## Design", 1)[1]
    block = re.search(r"```\n(.*?)```", section, re.S).group(1)
    named, parents = set(), []  # parents: (indent, "gemma_edge/formats/")
    for line in block.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        names = re.split(r" {2,}", line.strip(), maxsplit=1)[0].split()
        if not all(name.endswith((".py", "/")) for name in names):
            continue  # a description continued on the next line
        while parents and parents[-1][0] >= indent:
            parents.pop()
        base = parents[-1][1] if parents else ""
        for name in names:
            named.add(base + name)
        packages = [name for name in names if name.endswith("/")]
        if len(packages) == 1:
            parents.append((indent, base + packages[0]))
    return named


def modules_on_disk() -> set[str]:
    found = set()
    for top in MAPPED:
        for path in (ROOT / top).rglob("*.py"):
            relative = path.relative_to(ROOT)
            found.update(f"{'/'.join(relative.parts[:i])}/" for i in range(1, len(relative.parts)))
            if path.name not in NOT_MAPPED:
                found.add(relative.as_posix())
    return found


def test_the_design_map_lists_every_module_and_package():
    on_map = {path for path in design_map((ROOT / "README.md").read_text(encoding="utf-8"))
              if path.split("/")[0] in MAPPED}
    assert sorted(modules_on_disk() - on_map) == [], "on disk, missing from README's design map"
    assert sorted(on_map - modules_on_disk()) == [], "on README's design map, not on disk"


def test_the_map_reader_follows_indentation():
    readme = ("intro\n## Design\n\n```\ngemma_edge/\n  api.py chat.py   the API\n  formats/        turn formats\n"
              "    base.py gemma.py  one per family\n                  continued description\n"
              "  tools.py        tools\nconvert/\n  cli.py          the CLI\n```\n")
    assert design_map(readme) == {"gemma_edge/", "gemma_edge/api.py", "gemma_edge/chat.py", "gemma_edge/formats/",
                                  "gemma_edge/formats/base.py", "gemma_edge/formats/gemma.py",
                                  "gemma_edge/tools.py", "convert/", "convert/cli.py"}
