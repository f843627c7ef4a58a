"""What a generation returns: parsed message fields plus usage and timings."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Response:
    content: str
    thinking: str | None = None
    tool_calls: list[dict] = field(default_factory=list)
    errors: list = field(default_factory=list)
    finish_reason: str = "stop"          # stop | length | tool_calls
    usage: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    role: str = "assistant"

    def __str__(self) -> str:
        return self.content

    def message(self) -> dict:
        """The assistant message to append to a conversation history."""
        msg: dict = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            msg["tool_calls"] = self.tool_calls
        if self.thinking:
            msg["reasoning_content"] = self.thinking
        return msg

    def to_dict(self) -> dict:
        """The `run --json` document (schema: docs/run-json.schema.json)."""
        return {"content": self.content, "thinking": self.thinking, "tool_calls": self.tool_calls,
                "finish_reason": self.finish_reason, "usage": self.usage, "timings": self.timings,
                "errors": self.errors}
