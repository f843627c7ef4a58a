"""The chat page at `/` in a real browser (headless Chromium through Selenium) against real servers:
`gemma-edge chat --web` on the embedded model (streaming, stop, reload, export), a tiny Gemma 4 whose
output a grammar forces to hostile Markdown with thinking and a tool call, and the tiny Gemma 3 vision
pair behind an API key (the key dialog, an image attachment). Oracles: the library's own answer to the
same messages, the text we forced, the bytes we attached, and `Chat.load`/`Chat.save` for the export."""
from __future__ import annotations

import base64
import json
import re
import time

import httpx
import pytest
from click.testing import CliRunner

from tests.server.browser import local_storage, start_chromium, url_recorder, wait_for
from tests.server.conftest import library_answer, serve_argv, start_forced_server, start_server, stop_server

CONVERSATIONS = "gemma-edge.conversations"
QUESTION = "What is the capital of France?"
THOUGHT = "Check <img src=x onerror=window.__pwned=4> first."
ANSWER = ("**Paris** <img src=x onerror=window.__pwned=1>\n\n```\n<script>window.__pwned=2</script>\n```\n\n"
          "- [docs](https://example.com/a)\n- [bad](javascript:window.__pwned=3)")
CALL = '<|tool_call>call:get_weather{city:<|"|>Paris<|"|>}<tool_call|>'
HOSTILE_USER = "<script>window.__pwned=5</script> <b>hi</b>"
# Elements and attributes the Markdown renderer may create; anything else is an injection
ALLOWED_TAGS = {"P", "STRONG", "EM", "CODE", "PRE", "UL", "OL", "LI", "SPAN", "A", "BLOCKQUOTE", "H3", "H4", "H5",
                "H6"}
ALLOWED_ATTRIBUTES = {"A": {"href", "rel", "target"}, "CODE": {"data-lang"}, "OL": {"start"}}
HOSTILE_MARKDOWN = [
    "<img src=x onerror=window.__pwned=1>",
    "<script>window.__pwned=2</script>",
    "[x](javascript:window.__pwned=3)",
    "[x](JaVaScRiPt:window.__pwned=3)",
    "[x](data:text/html,<script>window.__pwned=4</script>)",
    '<a href="javascript:window.__pwned=5">x</a>',
    "**<b onmouseover=window.__pwned=6>bold</b>**",
    "`<iframe src=javascript:window.__pwned=7>`",
    "```html\n<svg onload=window.__pwned=8>\n```",
    "> <style>*{display:none}</style>",
    "- <details open ontoggle=window.__pwned=9>x</details>\n  - *<img src=x onerror=window.__pwned=10>*",
    'https://example.com/"><img src=x onerror=window.__pwned=11>',
    "# <svg/onload=window.__pwned=12>",
    "[<img src=x onerror=window.__pwned=13>](https://example.com/)",
]

# The page's DOM below an element as nested [tag, attributes, children | text]: what the renderer built.
DOM_TREE = """
const tree = (node) => node.nodeType === 3 ? node.textContent : [node.tagName,
  Object.fromEntries([...node.attributes].map((a) => [a.name, a.value])), [...node.childNodes].map(tree)];
"""


def render(driver, markdown: str):
    return driver.execute_script(DOM_TREE + """
const box = document.createElement("div");
box.append(window.gemmaEdge.renderMarkdown(arguments[0]));
document.body.append(box);
const result = [...box.childNodes].map(tree);
return [result, box.textContent];""", markdown)


def elements(tree):
    for node in tree:
        if isinstance(node, list):
            yield node[0], node[1]
            yield from elements(node[2])


def assert_inert(tree) -> None:
    for tag, attributes in elements(tree):
        assert tag in ALLOWED_TAGS, f"renderer created <{tag.lower()}>"
        assert set(attributes) <= ALLOWED_ATTRIBUTES.get(tag, set()), f"<{tag.lower()}> got {attributes}"
        if tag == "A":
            assert re.match(r"https?://", attributes["href"]) and "noopener" in attributes["rel"]


def settings(driver, *, system: str | None = None, temperature=None, max_tokens=None, thinking=None) -> None:
    from selenium.webdriver.common.by import By

    if driver.find_element(By.ID, "settings").get_attribute("hidden") is not None:
        driver.find_element(By.ID, "settings-toggle").click()
    for field, value in (("system", system), ("temperature", temperature), ("max-tokens", max_tokens)):
        if value is not None:
            element = driver.find_element(By.ID, field)
            element.clear()
            element.send_keys(str(value))
    box = driver.find_element(By.ID, "thinking")
    if thinking is not None and box.is_selected() != thinking:
        box.click()


def send(driver, text: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "prompt").send_keys(text)
    driver.find_element(By.ID, "send").click()


def idle(driver) -> bool:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, "stop").get_attribute("hidden") is not None


def open_page(driver, url: str, *, loaded: bool = True) -> None:
    """The page with empty storage (`loaded`: once it has the server's model list)."""
    driver.get(url)
    driver.execute_script("localStorage.clear()")
    driver.get(url)
    if loaded:
        model_listed(driver)


def model_listed(driver, what: str = "the page to load the model list") -> None:
    from selenium.webdriver.common.by import By

    wait_for(lambda: driver.find_element(By.ID, "model").text, 15, what)


def text_content(driver, selector: str) -> list[str]:
    return driver.execute_script("return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent)",
                                 selector)


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def driver():
    browser = start_chromium()
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def web(embedded_model_path, tmp_path_factory, driver):
    """`gemma-edge chat --web` on the embedded model; $BROWSER records the page it would open."""
    recorder, opened = url_recorder(tmp_path_factory.mktemp("browser"))
    running = start_server(["-m", "gemma_edge", "chat", "--web", "--port", "0", "--model", str(embedded_model_path),
                            "--ctx-size", "1024", "--threads", "1"], env={"BROWSER": str(recorder)})
    try:
        page_url = wait_for(lambda: opened.exists() and opened.read_text(), 10, "the page to be opened")
        assert page_url == running.url + "/"
        yield running
    finally:
        stop_server(running)


@pytest.fixture(scope="module")
def forced(tmp_path_factory, driver):
    """A tiny Gemma 4 whose every reply is forced to thinking, hostile Markdown and a tool call."""
    from tests.convert.tiny_gemma4 import tiny_gemma4_gguf

    running = start_forced_server(tiny_gemma4_gguf("dense", "f32"),
                                  f"<|channel>thought\n{THOUGHT}<channel|>{ANSWER}{CALL}", tmp_path_factory.mktemp("grammar"))
    yield running
    stop_server(running)


# -- tests ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--web", "--temperature", "0"], "chat --web takes --temperature in the page (system prompt, temperature, "
                                      "thinking, attachments), not on the command line"),
    (["--port", "8081"], "--port is for chat --web"),
])
def test_chat_web_takes_its_settings_in_the_page(args, message):
    from gemma_edge.cli import main

    result = CliRunner().invoke(main, ["chat", *args])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"gemma-edge: error: {message}"]


def test_the_page_is_self_contained_and_allows_only_its_own_code():
    from gemma_edge.server.webpage import page

    html, policy = page()
    text = html.decode()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text) and "@import" not in text
    assert len(re.findall(r"'sha256-", policy)) == 2 and "unsafe-inline" not in policy
    assert "connect-src 'self'" in policy and "default-src 'none'" in policy


@pytest.mark.slow
def test_a_reply_streams_in_and_is_kept_across_a_reload(web, driver, library_model, tmp_path):
    from gemma_edge.chat import Chat
    from selenium.webdriver.common.by import By

    open_page(driver, web.url + "/")
    settings(driver, temperature=0, max_tokens=24)
    driver.execute_script("""window.__seen = [];
      new MutationObserver(() => { const c = document.querySelectorAll(".msg.assistant .content");
        if (c.length) window.__seen.push(c[c.length - 1].textContent); })
      .observe(document.getElementById("messages"), {childList: true, subtree: true, characterData: true});""")
    send(driver, QUESTION)
    wait_for(lambda: idle(driver) and local_storage(driver, CONVERSATIONS), 60, "the reply")

    expected = library_answer(library_model, [{"role": "user", "content": QUESTION}], temperature=0, max_tokens=24)
    [conversation] = local_storage(driver, CONVERSATIONS)
    assert conversation["messages"] == [{"role": "user", "content": QUESTION},
                                        {"role": "assistant", "content": expected.content}]
    seen = [text for text in driver.execute_script("return window.__seen") if text]
    shown = text_content(driver, ".msg.assistant .content")[-1]
    assert any(len(text) < len(shown) for text in seen), "the reply appeared at once, not streamed"
    assert re.sub(r"\s", "", shown) == re.sub(r"\s", "", expected.content)

    driver.refresh()
    wait_for(lambda: text_content(driver, "#conversations .open") == [QUESTION], 10, "the conversation listed")
    assert text_content(driver, ".msg.user .bubble") == [QUESTION]
    assert text_content(driver, ".msg.assistant .content") == [shown]

    # Export: the JSON `chat /save` writes (Chat.load reads it, Chat.save writes it back unchanged)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
    driver.find_element(By.ID, "export").click()
    exported = wait_for(lambda: [p for p in tmp_path.glob("gemma-edge-chat-*.json")], 10, "the download")[0]
    chat = Chat(library_model)
    chat.load(exported)
    chat.save(tmp_path / "saved.json")
    assert (tmp_path / "saved.json").read_text() == exported.read_text()
    assert json.loads(exported.read_text()) == {"messages": conversation["messages"]}


@pytest.mark.slow
def test_stop_ends_the_generation_on_the_server(web, driver):
    from selenium.webdriver.common.by import By

    open_page(driver, web.url + "/")
    settings(driver, temperature=0, max_tokens=800)
    send(driver, QUESTION)
    wait_for(lambda: text_content(driver, ".msg.assistant .content")[-1].strip(), 30, "the first words")
    assert web.get("/health").json()["busy"], "the reply ended before the test could stop it"
    driver.find_element(By.ID, "stop").click()
    wait_for(lambda: not web.get("/health").json()["busy"], 5, "the server to stop generating")
    wait_for(lambda: idle(driver), 5, "the page to leave the busy state")
    assert driver.find_element(By.ID, "status").text == "stopped"
    [conversation] = local_storage(driver, CONVERSATIONS)
    kept = conversation["messages"][-1]
    assert kept["role"] == "assistant" and kept["content"].strip()  # the partial reply stays
    assert web.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}],
                                                  "max_tokens": 1}).status_code == 200


@pytest.mark.slow
def test_markdown_renderer_builds_only_inert_nodes(forced, driver):
    open_page(driver, forced.url + "/")
    for hostile in HOSTILE_MARKDOWN:
        tree, text = render(driver, hostile)
        assert_inert(tree)
        for fragment in re.findall(r"<[^>]*>", hostile):
            assert fragment in text, f"{fragment!r} of {hostile!r} lost or interpreted"
    tree, _ = render(driver, "**bold** and *it* `x<y`\n\n1. one\n2. two\n   - inner\n\n"
                             "[site](https://example.com/x?a=1&b=2)\n\n```py\nif a < b:\n    pass\n```")
    assert tree == [
        ["P", {}, [["STRONG", {}, ["bold"]], " and ", ["EM", {}, ["it"]], " ", ["CODE", {}, ["x<y"]]]],
        ["OL", {}, [["LI", {}, [["SPAN", {}, ["one"]]]],
                    ["LI", {}, [["SPAN", {}, ["two"]], ["UL", {}, [["LI", {}, [["SPAN", {}, ["inner"]]]]]]]]]],
        ["P", {}, [["A", {"href": "https://example.com/x?a=1&b=2", "rel": "noopener noreferrer", "target": "_blank"},
                    ["site"]]]],
        ["PRE", {}, [["CODE", {"data-lang": "py"}, ["if a < b:\n    pass"]]]]]
    time.sleep(0.2)
    assert driver.execute_script("return window.__pwned") is None


@pytest.mark.slow
def test_thinking_tool_calls_and_hostile_replies_are_shown_as_text(forced, driver):
    from selenium.webdriver.common.by import By

    open_page(driver, forced.url + "/")
    assert driver.find_element(By.ID, "thinking").is_enabled()
    settings(driver, system="Be brief.", temperature=0.5, max_tokens=200, thinking=True)
    driver.execute_script("""window.__sent = []; const original = window.fetch;
      window.fetch = (url, options) => { if (options && options.body) window.__sent.push(JSON.parse(options.body));
        return original(url, options); };""")
    send(driver, HOSTILE_USER)
    wait_for(lambda: idle(driver) and local_storage(driver, CONVERSATIONS), 60, "the reply")

    [sent] = driver.execute_script("return window.__sent")
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": HOSTILE_USER}]
    assert sent["temperature"] == 0.5 and sent["max_tokens"] == 200 and sent["stream"] is True
    assert sent["chat_template_kwargs"] == {"enable_thinking": True}
    [conversation] = local_storage(driver, CONVERSATIONS)
    assert conversation["messages"][-1] == {
        "role": "assistant", "content": ANSWER, "reasoning_content": THOUGHT,
        "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}

    thinking = driver.find_element(By.CSS_SELECTOR, ".msg.assistant details.thinking")
    assert thinking.get_attribute("open") is None  # collapsed, apart from the answer
    assert text_content(driver, ".msg.assistant details.thinking div") == [THOUGHT]
    assert text_content(driver, ".msg.user .bubble") == [HOSTILE_USER]
    [call] = text_content(driver, ".msg.assistant .tool-call")
    assert "get_weather" in call and json.loads(call[call.index("{"):]) == {"city": "Paris"}
    tree = driver.execute_script(DOM_TREE + "return [...document.querySelector('.msg.assistant .content')"
                                            ".childNodes].map(tree)")
    assert_inert(tree)
    [content] = text_content(driver, ".msg.assistant .content")
    for fragment in ("<img src=x onerror=window.__pwned=1>", "<script>window.__pwned=2</script>",
                     "bad (javascript:window.__pwned=3)"):
        assert fragment in content
    assert driver.execute_script("return document.querySelectorAll('#messages img, #messages script, "
                                 "#messages iframe').length") == 0
    time.sleep(0.2)
    assert driver.execute_script("return window.__pwned") is None


@pytest.mark.slow
def test_api_key_once_and_an_image_attachment(driver, tmp_path):
    """The page is served without the key, asks for it once, keeps it; an attached image goes to the
    model as the same bytes (the library's answer to them is the oracle); a hostile file name is text."""
    from selenium.webdriver.common.by import By

    from gemma_edge.api import Model
    from tests.convert.tiny_gemma3_vision import IMAGE_SIZE
    from tests.runtime.tiny_vision import gemma3_vision_pair, write_image

    text_model, mmproj = gemma3_vision_pair()
    key = "sk-page-" + "k3y" * 6
    running = start_server(serve_argv(text_model, "--ctx-size", "256", "--no-prompt-cache", "--api-key", key))
    try:
        assert running.get("/").status_code == 200 and running.get("/v1/models").status_code == 401
        assert httpx.get(running.url + "/", headers={"host": "evil.example"}).status_code == 400
        open_page(driver, running.url + "/", loaded=False)
        wait_for(lambda: driver.find_element(By.ID, "key-dialog").get_attribute("open") is not None, 10,
                 "the key dialog")
        driver.find_element(By.ID, "api-key").send_keys(key)
        driver.find_element(By.CSS_SELECTOR, "#key-form button").click()
        model_listed(driver, "the model list with the key")
        driver.refresh()  # asked once: the key is kept
        model_listed(driver, "the model list after a reload")
        assert driver.find_element(By.ID, "key-dialog").get_attribute("open") is None

        assert driver.find_element(By.ID, "attach").is_displayed()
        image = write_image(tmp_path / "<img src=x onerror=window.__pwned=7>.png", seed=3, size=IMAGE_SIZE)
        file_input = driver.find_element(By.ID, "file")
        driver.execute_script("arguments[0].hidden = false", file_input)
        file_input.send_keys(str(image))
        wait_for(lambda: text_content(driver, "#attachments .chip") == [image.name + "\u00d7"], 10, "the chip")
        settings(driver, temperature=0, max_tokens=8)
        send(driver, "Describe the image.")
        wait_for(lambda: idle(driver) and local_storage(driver, CONVERSATIONS), 60, "the reply")

        url = "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode()
        asked = [{"role": "user", "content": [{"type": "image", "url": url},
                                              {"type": "text", "text": "Describe the image."}]}]
        model = Model(text_model, n_ctx=256, n_threads=1, mmproj=mmproj)
        try:
            expected = library_answer(model, asked, temperature=0, max_tokens=8)
        finally:
            model.close()
        [conversation] = local_storage(driver, CONVERSATIONS)
        assert conversation["messages"] == [*asked, {"role": "assistant", "content": expected.content}]
        assert driver.execute_script("return document.querySelector('.msg.user img').src") == url
        assert driver.execute_script("return window.__pwned") is None
    finally:
        stop_server(running)
