"""Stop strings, the request-schema validator and the Host/API-key checks, against simple oracles:
the whole-text cut for streamed stop filtering, the `jsonschema` library for our validator."""
from __future__ import annotations

from types import SimpleNamespace

import jsonschema
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from gemma_edge.server import schema
from gemma_edge.server.errors import RequestError
from gemma_edge.server.security import allowed_hosts, bearer_token, host_name, key_matches
from gemma_edge.server.stops import StopFilter
from tests.server.strategies import from_schema


def whole_text_cut(text: str, stops: list[str]) -> str:
    hits = [text.find(s) for s in stops if s in text]
    return text[:min(hits)] if hits else text


@given(pieces=st.lists(st.text(alphabet="ab\n.", max_size=5), max_size=12),
       stops=st.lists(st.text(alphabet="ab\n.", min_size=1, max_size=3), min_size=1, max_size=4))
@example(pieces=[".", "\n", "a"], stops=["\n", ".\na"])  # a longer stop starting before a shorter one's hit
def test_streamed_stop_filter_equals_the_whole_text_cut(pieces, stops):
    f = StopFilter(stops)
    out = "".join(f.feed(p) for p in pieces)
    if not f.stopped:
        out += f.flush()
    text = "".join(pieces)
    assert out == whole_text_cut(text, stops)
    assert f.stopped == any(s in text for s in stops)


def test_stop_filter_holds_back_only_possible_prefixes():
    f = StopFilter(["</end>"])
    assert f.feed("hello </e") == "hello "
    assert f.feed("xtra") == "</extra"
    assert f.feed("</end> ignored") == "" and f.stopped


def strip_extensions(node):
    if isinstance(node, dict):
        return {k: strip_extensions(v) for k, v in node.items() if not k.startswith("x-")}
    if isinstance(node, list):
        return [strip_extensions(v) for v in node]
    return node


json_values = st.recursive(st.none() | st.booleans() | st.integers(-3, 3) | st.floats(-3, 3) | st.text(max_size=4),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                               st.sampled_from(["role", "content", "messages", "prompt", "type", "x"]), inner,
                               max_size=3), max_leaves=10)


def accepts(value, sch) -> bool:
    try:
        schema.validate(value, sch)
        return True
    except RequestError:
        return False


@pytest.mark.parametrize("name", ["CHAT_REQUEST", "COMPLETION_REQUEST", "MESSAGE", "TOOL", "RESPONSE_FORMAT"])
@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much], deadline=None)
@given(data=st.data())
def test_validator_agrees_with_jsonschema(name, data):
    sch = getattr(schema, name)
    oracle = jsonschema.Draft202012Validator(strip_extensions(sch))
    value = data.draw(json_values)
    assert accepts(value, sch) == oracle.is_valid(value)
    valid = data.draw(from_schema(sch))
    assert oracle.is_valid(valid) and accepts(valid, sch)


def test_validator_names_the_place():
    with pytest.raises(RequestError) as e:
        schema.validate({"messages": [{"role": "user", "content": 3}]}, schema.CHAT_REQUEST)
    assert e.value.param == "messages[0].content"
    with pytest.raises(RequestError) as e:
        schema.validate({"messages": [], "temperature": "hot"}, schema.CHAT_REQUEST)
    assert e.value.param == "messages"


def test_nesting_depth():
    assert schema.nesting_depth(1) == 0 and schema.nesting_depth([]) == 1
    assert schema.nesting_depth({"a": [{"b": []}]}) == 4
    deep = []
    for _ in range(10000):
        deep = [deep]
    assert schema.nesting_depth(deep) == 10001


@pytest.mark.parametrize("header, name", [("127.0.0.1:8080", "127.0.0.1"), ("localhost", "localhost"),
                                          ("[::1]:80", "::1"), ("::1", "::1"), ("Evil.example:80", "evil.example")])
def test_host_name(header, name):
    assert host_name(header) == name


def test_allowed_hosts():
    assert allowed_hosts("127.0.0.1") == {"127.0.0.1", "localhost", "::1"}
    assert "box.lan" in allowed_hosts("0.0.0.0", ["box.lan"]) and "0.0.0.0" not in allowed_hosts("0.0.0.0")
    assert allowed_hosts("127.0.0.1", ["*"]) is None


def test_key_comparison():
    assert key_matches("s3cret", "s3cret") and not key_matches("s3cre", "s3cret") and not key_matches(None, "k")
    assert not key_matches("ключ", "key")
    assert bearer_token("Bearer abc") == "abc" and bearer_token("bearer abc ") == "abc"
    assert bearer_token("Basic abc") is None and bearer_token(None) is None


def test_api_key_stays_out_of_the_config_repr():
    from gemma_edge.server import ServerConfig

    assert "hunter2" not in repr(ServerConfig(model_id="m", api_key="hunter2"))


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True),
                                            ("[::1]", True), ("localhost", True), ("0.0.0.0", False),
                                            ("::", False), ("192.168.1.4", False), ("box.lan", False)])
def test_non_loopback_hosts_are_recognised(host, loopback):
    from gemma_edge.cli.common import is_loopback

    assert is_loopback(host) is loopback


class ScriptedStream:
    """Stands in for a model's ResponseStream in scheduler tests: fixed events, then a Response."""

    def __init__(self, texts):
        from gemma_edge.response import Response

        self.texts = texts
        from gemma_edge.llama.engine import Timings

        self.response = Response(content="".join(texts), finish_reason="stop", usage={"completion_tokens": len(texts)})
        self.decode_run = SimpleNamespace(usage=self.response.usage, timings=Timings(), prompt_evaluated=0,
                                          tokens=texts, logprobs=None)

    def __iter__(self):
        for text in self.texts:
            yield {"type": "content", "text": text}


def test_scheduler_runs_jobs_in_arrival_order_and_max_queue_zero_still_serves():
    import asyncio
    import time

    from gemma_edge.server.jobs import Job, Scheduler

    async def main():
        scheduler = Scheduler(max_waiting=0)
        loop = asyncio.get_running_loop()
        alone = Job(lambda: ScriptedStream(["a", "b"]), stops=[], deadline=time.monotonic() + 10, loop=loop)
        await scheduler.submit(alone)  # idle model: served even though nobody may wait
        assert (await alone.outcome()).content == "ab"

        scheduler = Scheduler(max_waiting=8)
        order = []

        def start(name):
            def run():
                order.append(name)
                time.sleep(0.05)
                return ScriptedStream([name])
            return run

        jobs = [Job(start(str(i)), stops=[], deadline=time.monotonic() + 10, loop=loop) for i in range(5)]
        for job in jobs:
            asyncio.ensure_future(scheduler.submit(job))
            await asyncio.sleep(0)
        outcomes = [await job.outcome() for job in jobs]
        assert [o.content for o in outcomes] == order == ["0", "1", "2", "3", "4"]
        scheduler.shutdown()

    asyncio.run(main())
