"""The Gemma family members llama.cpp 0.3.36 cannot run are refused from config.json alone (one line naming
the model and why, exit code 2, nothing written), and llama.cpp's architecture list is pinned: a
llama-cpp-python that gains an architecture for one of them fails here, turning the refusal into work."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from convert.family import FAMILY, capabilities, member_for
from tests.convert.oracle import llama_cpp_source

REPO = Path(__file__).resolve().parents[2]
REFUSED = [m for m in FAMILY if m.refusal]
# llama.cpp 0.3.36's architectures for the Gemma family (src/llama-arch.cpp, LLM_ARCH_NAMES)
GEMMA_ARCHITECTURES = {"gemma", "gemma2", "gemma3", "gemma3n", "gemma4", "gemma4-assistant", "gemma-embedding"}


@cache
def llama_cpp_architectures() -> frozenset[str]:
    """The architecture names of the pinned llama.cpp: LLM_ARCH_NAMES in src/llama-arch.cpp, each checked
    to be a string of the loaded libllama too (the sources are the library's)."""
    import llama_cpp

    source = llama_cpp_source("src/llama-arch.cpp")
    table = source[source.index("LLM_ARCH_NAMES = {"):]
    names = set(re.findall(r'\{\s*LLM_ARCH_\w+,\s*"([^"]+)"\s*\}', table[:table.index("};")]))
    library = (Path(llama_cpp.__file__).parent / "lib" / "libllama.so").read_bytes()
    # the linker may store a name as the tail of a longer one ("bert" in "nomic-bert"): match the tail
    missing = sorted(n for n in names if n.encode() + b"\0" not in library)
    assert not missing, f"architectures of the sources missing from the loaded libllama: {missing}"
    return frozenset(names - {"(unknown)"})


def squashed(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def test_llama_cpp_gemma_architectures_are_pinned() -> None:
    names = llama_cpp_architectures()
    assert len(names) > 100
    assert {n for n in names if "gemma" in n} == GEMMA_ARCHITECTURES


@pytest.mark.parametrize("member", REFUSED, ids=[m.name for m in REFUSED])
def test_refused_members_have_no_llama_cpp_architecture(member) -> None:
    """No architecture spelled like the member's model_type (t5gemma, vault-gemma, recurrentgemma ...)."""
    names = {squashed(n) for n in llama_cpp_architectures()}
    assert not {squashed(t) for t in member.model_types} & names


def config_only(member, directory: Path) -> Path:
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"architectures": list(member.architectures[:1]),
                                                       "model_type": member.model_types[0]}))
    return directory


@pytest.mark.parametrize("member", REFUSED, ids=[m.name for m in REFUSED])
def test_refused_from_config_json_alone(member, tmp_path) -> None:
    from convert.api import convert_checkpoint
    from convert.family import UnrunnableModel

    checkpoint = config_only(member, tmp_path / "checkpoint")
    with pytest.raises(UnrunnableModel) as error:
        convert_checkpoint(checkpoint, tmp_path / "out.gguf", "f32")
    assert str(error.value) == f"{member.name} ({member.model_types[0]}) cannot be converted: {member.refusal}"
    assert "\n" not in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_refusal_on_the_command_line_is_one_line_and_exit_2(tmp_path) -> None:
    member = next(m for m in REFUSED if m.name == "DiffusionGemma")
    out = tmp_path / "out.gguf"
    result = subprocess.run([sys.executable, "-m", "convert", "convert", str(config_only(member, tmp_path / "ckpt")),
                             "-o", str(out)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"error: DiffusionGemma (diffusion_gemma) cannot be converted: "
                                                  f"{member.refusal}"]
    assert not out.exists() and not (tmp_path / "mmproj-out.gguf").exists()


def test_model_type_alone_identifies_a_member() -> None:
    assert member_for({"model_type": "recurrent_gemma"}).name == "RecurrentGemma"
    assert member_for({"architectures": ["Gemma4UnifiedForConditionalGeneration"]}).name == "Gemma 4 12B Unified"
    assert member_for({"model_type": "gemma4_unified_assistant"}).name.startswith("Gemma 4 MTP drafters")
    assert member_for({"model_type": "llama"}) is None


def test_capabilities_come_from_the_registries() -> None:
    rows = {m.name: capabilities(m) for m in FAMILY}
    unified = rows["Gemma 4 12B Unified"]
    assert unified["converts"] and unified["sees"] and unified["hears"] and unified["why_not"] is None
    assert rows["Gemma 3n (E2B, E4B)"]["sees"] and not rows["Gemma 3n (E2B, E4B)"]["hears"]
    drafters = rows["Gemma 4 MTP drafters (E2B, E4B, 26B-A4B, 31B; 12B Unified)"]
    assert drafters["converts"] and drafters["drafts"] and not drafters["runs"]
    assert not any(row["drafts"] for name, row in rows.items() if not name.startswith("Gemma 4 MTP"))
    for member in REFUSED:
        assert not any(rows[member.name][k] for k in ("converts", "runs", "sees", "hears", "embeds", "drafts"))
        assert rows[member.name]["why_not"] == member.refusal


def test_readme_support_table_is_the_family_table() -> None:
    from convert.family import CAPABILITIES, support_table

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("<!-- support-table"):readme.index("<!-- /support-table -->")]
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in table.splitlines()[3:]]
    expected = [[row["model"], *("yes" if row[k] else "no" for k in CAPABILITIES), row["why_not"] or ""]
                for row in support_table()]
    assert rows == expected


def test_list_family_and_info_show_the_table(tmp_path) -> None:
    from click.testing import CliRunner

    from gemma_edge.cli import main

    listed = CliRunner().invoke(main, ["list", "--family"])
    assert listed.exit_code == 0, listed.output
    for member in FAMILY:
        assert member.name in listed.output
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["RecurrentGemmaForCausalLM"],
                                                      "model_type": "recurrent_gemma"}))
    shown = CliRunner().invoke(main, ["info", str(tmp_path), "--json"])
    assert shown.exit_code == 0, shown.output
    facts = json.loads(shown.output)
    assert facts["family"] == "RecurrentGemma" and facts["converts"] is False
    assert facts["why_not"] == member_for({"model_type": "recurrent_gemma"}).refusal
