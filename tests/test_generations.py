"""The runtime generation table (`gemma_edge/generations/`) is the one list of Gemma generations: every
other registry of names agrees with it (turn formats, output syntaxes, models.yaml's schema, the mmproj
projector types, the converter's tables), and docs/adding-a-generation.md names files that exist."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from convert.family import DRAFTER_ARCH
from convert.generations import generation_for, generations as conversion_tables
from convert.mmproj import encoders
from gemma_edge import models_schema, projector
from gemma_edge.formats import FORMAT_NAMES, get_format
from gemma_edge.generations import ARCHITECTURES, GENERATIONS, MODEL_FORMATS, generation_of, variant_named
from gemma_edge.parsing import SYNTAX_BY_FORMAT, SYNTAXES

REPO = Path(__file__).resolve().parent.parent
VARIANTS = [(g, v) for g in GENERATIONS for v in g.variants]
CHAT_VARIANTS = [(g, v) for g, v in VARIANTS if v.turn_format is not None]


def variant_id(pair) -> str:
    return f"{pair[0].name}:{pair[1].format}"


def test_names_are_unique():
    """A name claimed twice would silently shadow one entry in the lookups built from the table."""
    names = [g.name for g in GENERATIONS]
    architectures = [a for g in GENERATIONS for a in g.architectures]
    formats = [v.format for _, v in VARIANTS]
    assert len(set(names)) == len(names) and len(set(architectures)) == len(architectures)
    assert len(set(formats)) == len(formats) and tuple(formats) == MODEL_FORMATS
    assert tuple(architectures) == ARCHITECTURES
    assert all(generation_of(a) is g for g in GENERATIONS for a in g.architectures)


def test_turn_formats_are_exactly_the_table_s():
    """Every turn format in formats/ belongs to one generation's variant, and the variant holds that very
    format; an embedding model has none."""
    assert {v.format for _, v in CHAT_VARIANTS} == set(FORMAT_NAMES)
    assert all(v.turn_format is get_format(v.format) for _, v in CHAT_VARIANTS)
    assert [g.name for g in GENERATIONS if g.embeds] == [g.name for g, v in VARIANTS if v.turn_format is None]


@pytest.mark.parametrize("pair", CHAT_VARIANTS, ids=variant_id)
def test_turn_format_and_output_syntax_agree(pair):
    """The turn format a variant renders and the syntax its replies are parsed with name the same markers:
    the turn ends at the syntax's first end marker, generation stops at the syntax's tool-response opener
    (the runtime continues there), thinking and tools are both there or both absent."""
    _, variant = pair
    turn_format, syntax = variant.turn_format, SYNTAXES[variant.syntax]
    assert turn_format.end_of_turn == syntax.end_markers[0]
    assert turn_format.stop_markers == tuple(m for m in (syntax.response_open,) if m)
    assert variant.stop_markers == (turn_format.end_of_turn, *turn_format.stop_markers)
    assert set(variant.stop_markers) <= set(syntax.all_markers())
    assert turn_format.supports_thinking == syntax.supports_thinking
    assert turn_format.supports_tools == syntax.supports_calls


def test_parsing_reads_format_and_generation_names_through_the_table():
    """parse_response(format=...) takes a variant's format name or a chat generation's name (its fallback
    variant), each with the syntax the table names, and every syntax is some variant's."""
    chat_generations = {g.name for g in GENERATIONS if not g.embeds}
    assert set(SYNTAX_BY_FORMAT) == {v.format for _, v in CHAT_VARIANTS} | chat_generations
    for name, syntax in SYNTAX_BY_FORMAT.items():
        assert syntax is SYNTAXES[variant_named(name).syntax]
    assert {v.syntax for _, v in CHAT_VARIANTS} == set(SYNTAXES)


def test_models_yaml_schema_enums_are_the_table_s():
    assert models_schema.GENERATIONS == [g.name for g in GENERATIONS]
    assert models_schema.FORMATS == list(MODEL_FORMATS)


def test_projector_types_are_the_converter_s_and_the_runtime_s():
    """Each supported mmproj encoder's projector type is listed by the generation its checkpoints convert to,
    every listed type has such an encoder, and the projector's per-type rules name listed types only."""
    listed = {t: g for g in GENERATIONS for t in g.projector_types}
    written = {}
    for encoder in encoders():
        if encoder.unsupported:
            continue
        owners = {generation_of(generation_for(a).gguf_arch).name for a in encoder.hf_architectures}
        written[encoder.projector_type] = owners
    assert set(listed) == set(written)
    assert {t: {g.name} for t, g in listed.items()} == written
    assert set(projector.IMAGE_BUDGETS) | set(projector.NON_CAUSAL_IMAGE_POSITIONS) <= set(listed)


def test_every_runtime_generation_converts_under_its_own_name():
    """Each runtime generation has a conversion table of the same name writing its GGUF architecture, in a
    module of the same name on both sides; every other conversion table is a named variant of one
    (`gemma4-unified`) or writes a drafter."""
    tables = list(conversion_tables())
    for generation in GENERATIONS:
        own = [t for t in tables if t.name == generation.name]
        assert len(own) == 1, f"{generation.name}: no conversion table of that name in convert/generations"
        assert own[0].gguf_arch in generation.architectures
        assert {t.gguf_arch for t in tables} >= set(generation.architectures)
        for side in ("gemma_edge/generations", "convert/generations"):
            assert (REPO / side / f"{generation.name}.py").is_file(), f"{side}/{generation.name}.py"
    for table in tables:
        if table.gguf_arch == DRAFTER_ARCH:  # a drafter runs beside its target, never as a model of its own
            assert generation_of(table.gguf_arch) is None
            continue
        runtime = generation_of(table.gguf_arch)
        assert runtime is not None, f"{table.name} writes {table.gguf_arch!r}, which no runtime generation runs"
        assert table.name == runtime.name or table.name.startswith(f"{runtime.name}-"), table.name


def test_the_walkthrough_names_files_that_exist():
    """docs/adding-a-generation.md names concrete files (its running example, Gemma 3n); each exists."""
    text = (REPO / "docs" / "adding-a-generation.md").read_text(encoding="utf-8")
    paths = set(re.findall(r"`((?:gemma_edge|convert|tests|docs)/[\w./-]+\.(?:py|md|jinja|yaml))`", text))
    assert len(paths) >= 8
    assert sorted(p for p in paths if not (REPO / p).is_file()) == []
