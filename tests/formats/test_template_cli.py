"""`gemma-edge template`: the prompt, its tokens, and --check against an embedded template."""
from __future__ import annotations

import json

import gguf
import pytest
from click.testing import CliRunner

from gemma_edge.cli.template import template
from gemma_edge.formats import get_format, render_prompt
from gemma_edge.formats.samples import sample_conversations
from tests.reference import NEWEST_TEMPLATES

from .oracle import Raised, official

CONVERSATION = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi <start_of_image><|turn> there"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}]


def run(*args, input=None):
    return CliRunner().invoke(template, [str(a) for a in args], input=input, catch_exceptions=False)


@pytest.fixture
def chat_file(tmp_path):
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(CONVERSATION))
    return path


def test_prints_the_official_prompt(templates_dir, chat_file):
    for name in ("gemma3", "gemma4-large"):
        result = run("--format", name, "--messages", chat_file)
        assert result.exit_code == 0
        assert result.output == official((templates_dir / NEWEST_TEMPLATES[name]).read_text(), CONVERSATION)


def test_messages_object_with_tools_and_thinking_from_stdin(templates_dir):
    tool = {"type": "function", "function": {"name": "f", "description": "d", "parameters": {
        "type": "object", "properties": {"x": {"type": "string"}}}}}
    data = json.dumps({"messages": CONVERSATION[1:2], "tools": [tool]})
    result = run("--format", "gemma4-small", "--messages", "-", "--think", "--no-generation-prompt", input=data)
    assert result.exit_code == 0
    expected = official((templates_dir / "gemma4-e2b-it.jinja").read_text(), CONVERSATION[1:2], tools=[tool],
                        enable_thinking=True, add_generation_prompt=False)
    assert result.output == expected


@pytest.mark.slow
def test_tokens_are_llama_cpp_ids_with_control_tokens_marked(embedded_model_path, chat_file):
    llama_cpp = pytest.importorskip("llama_cpp")
    result = run(embedded_model_path, "--format", "gemma3", "--messages", chat_file, "--tokens")
    assert result.exit_code == 0
    rows = [line.split(maxsplit=2) for line in result.output.splitlines()]
    ids = [int(row[0]) for row in rows]
    marked = [int(row[0]) for row in rows if row[1] == "*"]
    llama = llama_cpp.Llama(str(embedded_model_path), vocab_only=True, verbose=False)
    prompt = render_prompt(CONVERSATION, format="gemma3")
    control = {m: llama.tokenize(m.encode(), add_bos=False, special=True)[0]
               for m in ("<bos>", "<start_of_turn>", "<end_of_turn>")}
    turns = 3  # system folded into the first user turn, model, user; then the generation prompt
    assert marked == [control[m] for m in ["<bos>"] + ["<start_of_turn>", "<end_of_turn>"] * turns + ["<start_of_turn>"]]
    # the user's "<start_of_image>" stays text: the only difference from llama.cpp's own special parsing
    plain = llama.tokenize(prompt.encode(), add_bos=False, special=True)
    image_id = llama.tokenize(b"<start_of_image>", add_bos=False, special=True)[0]
    assert image_id in plain and image_id not in ids


def _gguf_with_template(path, architecture, chat_template):
    """A metadata-only Gemma GGUF carrying a chat template (enough for --check)."""
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_context_length(8192)
    writer.add_block_count(1)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(["<pad>", "<eos>", "<bos>"])
    writer.add_token_types([3, 3, 3])
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_chat_template(chat_template)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _first_sample_differing(format_name, chat_template):
    """The oracle's verdict: the first built-in conversation whose rendering differs."""
    for name, messages, options in sample_conversations(get_format(format_name)):
        try:
            ours = render_prompt(messages, format=format_name, strict=True, **options)
        except Exception as error:  # noqa: BLE001 - compared as the template's message
            ours = Raised(str(error))
        if ours != official(chat_template, messages, **options):
            return name
    return None


@pytest.mark.parametrize("format_name, architecture", [("gemma3", "gemma3"), ("gemma2", "gemma2"),
                                                       ("gemma4-large", "gemma4")])
def test_check_passes_on_the_newest_official_template(templates_dir, tmp_path, format_name, architecture):
    chat_template = (templates_dir / NEWEST_TEMPLATES[format_name]).read_text()
    assert _first_sample_differing(format_name, chat_template) is None
    model = _gguf_with_template(tmp_path / "m.gguf", architecture, chat_template)
    result = run("--check", model, "--format", format_name)
    assert result.exit_code == 0, result.output
    assert "render exactly like" in result.output


def test_check_reports_the_first_difference(templates_dir, tmp_path):
    """An older Gemma 4 template (the launch one): the oracle says where ours differs first."""
    chat_template = (templates_dir / "gemma4-it.2026-04-02.jinja").read_text()
    expected = _first_sample_differing("gemma4-large", chat_template)
    assert expected is not None
    model = _gguf_with_template(tmp_path / "old.gguf", "gemma4", chat_template)
    result = CliRunner().invoke(template, ["--check", str(model), "--format", "gemma4-large"])
    assert result.exit_code == 1
    assert f"on '{expected}'" in result.output and "ours:" in result.output


@pytest.mark.parametrize("args", [
    ["--format", "gemma9", "--messages", "x.json"],
    ["--format", "gemma3"],
    ["--format", "gemma3", "--messages", "/no/such/file.json"],
    ["--format", "gemma3", "--tokens", "--messages", "x.json"],
    ["--messages", "x.json"],
])
def test_bad_input_exits_2(args):
    assert CliRunner().invoke(template, args).exit_code == 2


def test_invalid_json_and_strict_failure_exit_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    assert CliRunner().invoke(template, ["--format", "gemma3", "--messages", str(bad)]).exit_code == 2
    system = tmp_path / "system.json"
    system.write_text(json.dumps(CONVERSATION))
    result = CliRunner().invoke(template, ["--format", "gemma2", "--messages", str(system), "--strict"])
    assert result.exit_code == 2 and "System role not supported" in result.output
