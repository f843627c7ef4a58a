"""Shared checks of the streaming promises: whatever the chunking, the events reassemble to the
whole-output parse, and no text delta cuts through a marker."""
from __future__ import annotations

from gemma_edge.parsing import StreamParser, parse_response, syntax_for


def feed_all(pieces, format: str, **kwargs):
    parser = StreamParser(format, **kwargs)
    events = []
    for piece in pieces:
        events.extend(parser.feed(piece))
    events.extend(parser.finish())
    return events, parser.close()


def check_stream(pieces, format: str, **kwargs) -> dict:
    """Assert every streaming promise for this chunking of one output; return the message."""
    text = "".join(pieces)
    events, closed = feed_all(pieces, format, **kwargs)
    whole = parse_response(text, format=format, **kwargs)
    assert closed == whole
    for kind in ("thinking", "content"):
        deltas = [ev["text"] for ev in events if ev["type"] == kind]
        assert all(deltas), "empty text delta"
        joined = "".join(deltas)
        assert joined.strip() == (whole[kind] or "")
        _assert_no_cut_marker(deltas, syntax_for(format).all_markers())
    assert [ev["tool_call"] for ev in events if ev["type"] == "tool_call"] == whole["tool_calls"]
    return whole


def _assert_no_cut_marker(deltas, markers) -> None:
    joined = "".join(deltas)
    cuts, pos = set(), 0
    for d in deltas[:-1]:
        pos += len(d)
        cuts.add(pos)
    for m in markers:
        start = joined.find(m)
        while start >= 0:
            inside = set(range(start + 1, start + len(m)))
            assert not (inside & cuts), f"a delta boundary cuts the marker {m!r}"
            start = joined.find(m, start + 1)
