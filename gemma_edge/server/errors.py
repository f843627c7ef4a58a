"""Errors the server answers with: OpenAI's shape `{"error": {"message", "type", "param", "code"}}`, and
Ollama's `{"error": "message"}` for its endpoints under `/api/`."""
from __future__ import annotations

# HTTP status -> OpenAI error type
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               405: "invalid_request_error", 408: "timeout_error", 413: "invalid_request_error",
               415: "invalid_request_error", 500: "server_error", 503: "overloaded_error", 504: "timeout_error"}


class RequestError(Exception):
    """A request the server refuses, with the HTTP status to answer and a one-line reason."""

    def __init__(self, message: str, status: int = 400, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message, self.status, self.param, self.code = message, status, param, code

    def body(self, path: str = "") -> dict:
        """The body for an answer to `path` (Ollama's shape under /api/)."""
        if path.startswith(OLLAMA_PREFIX):
            return {"error": self.message}
        return error_body(self.message, self.status, param=self.param, code=self.code)


def error_body(message: str, status: int, *, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


OLLAMA_PREFIX = "/api/"


def error_body_for(path: str, message: str, status: int, *, code: str | None = None) -> dict:
    """The error body in the shape the endpoint at `path` speaks."""
    return {"error": message} if path.startswith(OLLAMA_PREFIX) else error_body(message, status, code=code)
