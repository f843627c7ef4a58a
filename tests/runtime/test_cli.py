"""The CLI, in-process (click's runner) and as a real subprocess, on the real embedded model."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gemma_edge.cli import main

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "docs" / "run-json.schema.json").read_text())


def invoke(*args, input=None, env=None):
    return CliRunner().invoke(main, list(args), input=input, env=env, catch_exceptions=False)


def run_subprocess(*args, input=None, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "gemma_edge", *args], input=input, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})}, cwd=REPO)


def test_run_json_validates_against_schema_and_equals_api(model):
    import jsonschema

    result = invoke("run", "Name a fruit.", "--chat", "--json", "-t", "0", "-n", "12", "--ctx-size", "1024")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    jsonschema.validate(doc, SCHEMA)
    expected = model.generate("Name a fruit.", temperature=0, max_tokens=12)
    assert doc["content"] == expected.content
    assert doc["usage"]["completion_tokens"] == expected.usage["completion_tokens"]


def test_run_on_a_base_model_continues_the_text(model):
    # The embedded 270M is a base model: `run` continues the prompt (one note line), exactly as
    # --raw does; --chat (or a system prompt) puts it in the turn format.
    assert not model.instruct
    prompt = "Q: What is the capital of Japan?\nA: Tokyo\nQ: What is the capital of France?\nA:"
    continued = invoke("run", prompt, "--json", "-t", "0", "-n", "6", "--ctx-size", "1024")
    assert continued.exit_code == 0, continued.output
    assert json.loads(continued.stdout)["content"] == model.generate(prompt, raw=True, temperature=0,
                                                                     max_tokens=6).content
    notes = continued.stderr.strip().splitlines()
    assert len(notes) == 1 and "base model: continuing your text" in notes[0] and "--chat" in notes[0]
    chatted = invoke("run", prompt, "--chat", "--json", "-t", "0", "-n", "6", "--ctx-size", "1024")
    assert json.loads(chatted.stdout)["content"] == model.generate(prompt, temperature=0, max_tokens=6).content
    system = invoke("run", prompt, "-s", "Be brief.", "--json", "-t", "0", "-n", "6", "--ctx-size", "1024")
    expected = model.generate([{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}],
                              temperature=0, max_tokens=6)
    assert json.loads(system.stdout)["content"] == expected.content
    both = invoke("run", prompt, "--raw", "--chat")
    assert both.exit_code == 2 and "exclude each other" in both.stderr


def test_run_reads_stdin_in_a_real_subprocess(model):
    expected = model.generate("The ocean is", raw=True, temperature=0, max_tokens=8).content
    piped = run_subprocess("run", "--raw", "-t", "0", "-n", "8", "--json", input="The ocean is")
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["content"] == expected
    dash = run_subprocess("run", "-", "--raw", "-t", "0", "-n", "8", input="The ocean is")
    assert dash.returncode == 0, dash.stderr
    assert dash.stdout == expected + "\n"


def test_chat_with_piped_stdin_commands_and_save(tmp_path, model):
    saved = tmp_path / "chat.json"
    script = f"Hello there.\n/system Be brief.\nWhat is rain?\n/save {saved}\n/exit\nnot reached\n"
    result = run_subprocess("chat", "-t", "0", "-n", "10", "--ctx-size", "1024", input=script)
    assert result.returncode == 0, result.stderr
    assert "not instruction-tuned" in result.stderr
    messages = json.loads(saved.read_text())["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    assert messages[0]["content"] == "Be brief."
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    position = 0
    for reply in replies:  # streamed in order (the saved content is the stripped stream)
        found = result.stdout.find(reply, position)
        assert found >= 0, (reply, result.stdout)
        position = found + len(reply)
    # The same conversation through the Python API gives the same greedy replies.
    from gemma_edge.chat import Chat

    chat = Chat(model, temperature=0, max_tokens=10)
    first = chat.send("Hello there.").content
    chat.system = "Be brief."
    assert [first, chat.send("What is rain?").content] == replies


def _write_llama_gguf(path: Path) -> None:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_token_list(["<unk>", "a"])
    writer.add_tensor("token_embd.weight", np.zeros((2, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture
def bad_inputs(tmp_path, embedded_model_path):
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("hello")
    truncated = tmp_path / "cut.gguf"
    with open(embedded_model_path, "rb") as f:
        truncated.write_bytes(f.read(50_000_000))
    llama = tmp_path / "llama.gguf"
    _write_llama_gguf(llama)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    return {"not_gguf": not_gguf, "truncated": truncated, "llama": llama, "blocker": blocker,
            "model": embedded_model_path}


CASES = {
    "unknown name": (["run", "hi", "-m", "gemma-3-27m"], {}, "did you mean gemma-3-270m"),
    "missing file": (["run", "hi", "-m", "./nowhere/model.gguf"], {}, "no such file"),
    "not gguf": (["info", "{not_gguf}"], {}, "not a GGUF file"),
    "truncated": (["run", "hi", "-m", "{truncated}"], {}, "truncated GGUF"),
    "not gemma": (["run", "hi", "-m", "{llama}"], {}, "architecture 'llama' is not a Gemma model"),
    "prompt too long": (["run", "word " * 100, "-m", "{model}", "--ctx-size", "32"], {},
                        "but the context holds 32"),
    "does not fit": (["run", "hi", "-m", "{model}"], {"GEMMA_EDGE_MAX_MEMORY": "64M"}, "only 0.1 GB is available"),
    "unwritable cache": (["run", "hi"], {"GEMMA_EDGE_HOME": "{blocker}/cache"}, "is not writable"),
    "bad option value": (["run", "hi", "--top-p", "2"], {}, "--top-p"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2(case, bad_inputs):
    args, env, expected = CASES[case]
    args = [a.format(**bad_inputs) for a in args]
    env = {k: v.format(**bad_inputs) for k, v in env.items()}
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert len([line for line in lines if line.startswith(("gemma-edge: error:", "Error:"))]) == 1


def test_bad_input_in_a_real_subprocess(bad_inputs):
    result = run_subprocess("run", "hi", "-m", str(bad_inputs["truncated"]))
    assert result.returncode == 2
    assert result.stderr.startswith("gemma-edge: error:") and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_info_reads_facts_without_loading(embedded_model_path):
    result = invoke("info", str(embedded_model_path), "--json")
    assert result.exit_code == 0
    facts = json.loads(result.stdout)
    import gguf

    reader = gguf.GGUFReader(str(embedded_model_path))  # oracle: gguf-py's own reader
    field = lambda key: reader.fields[key].contents()  # noqa: E731
    assert facts["generation"] == "gemma3" and facts["format"] == "gemma3"
    assert facts["context_length"] == field("gemma3.context_length")
    assert facts["layers"] == field("gemma3.block_count")
    assert facts["parameters"] == sum(int(t.n_elements) for t in reader.tensors)
    tokens = reader.fields["tokenizer.ggml.tokens"]
    assert facts["special_tokens"]["bos"] == tokens.contents(field("tokenizer.ggml.bos_token_id"))
    assert facts["chat_template"] == ("embedded" if "tokenizer.chat_template" in reader.fields else "none")


def test_help_teaches():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("run", "chat", "info", "list", "pull"):
        assert command in result.stdout
    assert "--temperature" in invoke("run", "--help").stdout


def test_ctrl_c_stops_the_reply_not_the_chat(tmp_path):
    import signal
    import time

    saved = tmp_path / "after.json"
    proc = subprocess.Popen([sys.executable, "-m", "gemma_edge", "chat", "-t", "0", "-n", "3000", "--ctx-size", "4096"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO,
                            # A shell that started this run in the background may ignore SIGINT; Ctrl-C
                            # must reach the child as it does from a terminal.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert "not instruction-tuned" in proc.stderr.readline()  # the model is loaded
        proc.stdin.write("Write a very long story about the sea.\n")
        proc.stdin.flush()
        assert proc.stdout.read(1)  # the reply is streaming
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        proc.stdin.write(f"/save {saved}\n/exit\n")
        proc.stdin.flush()
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "(stopped)" in err and "Traceback" not in err
    assert json.loads(saved.read_text())["messages"] == []  # the interrupted exchange left no trace


def test_demo_shows_live_results(model):
    # Every line of the demo comes from a live run: check each section against the API and the parser.
    from gemma_edge.cli.generate import FEW_SHOT, FOLLOW_UP
    from gemma_edge.parsing import parse_response

    result = invoke("demo")
    assert result.exit_code == 0, result.output
    sections = result.stdout.split("\n== ")
    answer = model.generate(FEW_SHOT, raw=True, temperature=0, max_tokens=24).content.split("\n")[0]
    assert FEW_SHOT + answer + "\n" in sections[1] and answer.strip()
    follow = model.generate(FEW_SHOT + answer + FOLLOW_UP, raw=True, temperature=0, max_tokens=24).content
    assert FOLLOW_UP.lstrip("\n") + follow.split("\n")[0] + "\n" in sections[2]
    evaluated = re.search(r"\[(\d+) prompt tokens, of which only (\d+) evaluated", sections[2])
    assert evaluated and int(evaluated.group(2)) < int(evaluated.group(1))
    conversation = json.loads(sections[4].splitlines()[1])
    assert model.format in sections[4].splitlines()[0]
    from gemma_edge.formats import render_prompt

    assert render_prompt(conversation, format=model.format) in sections[4]
    lines = sections[5].splitlines()
    raw = "\n".join(lines[1:lines.index(next(l for l in lines if l.startswith("{")))])
    parsed = json.loads(next(l for l in lines if l.startswith("{")))
    assert parsed == parse_response(raw, format="gemma4-large", enable_thinking=True)
    assert parsed["thinking"] and parsed["tool_calls"] and parsed["tool_calls"][0]["function"]["name"]
    assert "gemma-edge pull" in sections[5]
