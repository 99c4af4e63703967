"""A language-model stand-in speaking OpenAI chat completions and Anthropic Messages over HTTP.

Scripted per test: a queue of replies (text, `Reply`, or a `Fault`: 429 with Retry-After,
5xx, 4xx, a dropped connection), or a function of the request; it checks the API key and
keeps every request it received (`requests`, `prompts`) so tests can read what the agent
sent. Loopback only; no model runs here.

    stand_in = LLMStandIn(api_key="sk-test")
    stand_in.script("```python\\ndef lambda_handler(event, context): ...\\n```")
    with serving(stand_in.app) as server:
        OpenAICompatible(base_url=server.base_url + "/v1", model="m", api_key="sk-test")

Routes: POST /v1/chat/completions (also /chat/completions), POST /v1/messages; for a stand-in
in another process, POST /_standin/script {"replies": [...]}, GET and DELETE
/_standin/requests. Run alone: `python -m devkit.standins.llm --port N`.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from devkit.standins.server import RunningServer, serving

Api = Literal["openai", "anthropic"]
DEFAULT_MODEL = "standin-model"
# What `python -m devkit.standins.llm` answers when nothing is scripted: valid handler code.
CANNED_REPLY = """Here is the integration.

```python
from docrelay.sdk import get_document


def lambda_handler(event, context):
    document = get_document(event["document_identifier"])
    print("fields:", sorted(document["data"]))
    return {"summary": "read " + event["document_identifier"]}
```
"""
# What it answers, unscripted, to a prompt for JavaScript (a Node.js integration).
CANNED_REPLY_JS = """Here is the integration.

```javascript
import { getDocument } from "@docrelay/sdk";

export async function handler(event, context) {
  const document = await getDocument(event.document_identifier);
  console.log("fields:", Object.keys(document.data ?? {}).sort());
  return { summary: "read " + event.document_identifier };
}
```
"""


def canned_reply(recorded: Recorded) -> str:
    """The canned handler in the language the prompt asks for; to the judge of a test
    (docs/agent.md, "Tests that check the instructions"), a pass."""
    if "did what the user asked" in recorded.system:
        return json.dumps({"verdict": "pass", "reasons": ["the stand-in passes every test"]})
    return CANNED_REPLY_JS if "JavaScript" in recorded.system else CANNED_REPLY


@dataclass(frozen=True)
class Reply:
    """A successful completion. `truncated`: reported as cut off at max_tokens."""

    text: str
    model: str | None = None  # default: the model the request named
    truncated: bool = False
    # The usage reported; default the prompt's and the reply's words (a provider's tokenizer
    # counts differently: a test sets these to see what the agent does with what it reports).
    input_tokens: int | None = None
    output_tokens: int | None = None

    @classmethod
    def question(cls, text: str) -> Reply:
        """A clarifying question: words and no code block, as a conversation's agent takes it
        (docs/agent.md, "Conversations")."""
        if "```" in text:
            raise ValueError("a question has no code block")
        return cls(text)

    @classmethod
    def judgement(cls, passed: bool, *reasons: str) -> Reply:
        """The answer to the agent's judge prompt: the JSON verdict it asks for."""
        return cls(json.dumps({"verdict": "pass" if passed else "fail", "reasons": list(reasons)}))


@dataclass(frozen=True)
class Fault:
    """A failure instead of a reply: an HTTP error, or a connection dropped mid-response."""

    status: int = 500
    message: str = "the stand-in was told to fail"
    retry_after: str | None = None  # the Retry-After header, verbatim (seconds or a date)
    code: str | None = None  # the error code/type, default from the status
    drop: bool = False

    @classmethod
    def rate_limited(cls, retry_after: str | None = "0", code: str | None = None) -> Fault:
        return cls(429, "rate limit reached", retry_after=retry_after, code=code)

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        return cls(status, "the server had an error")

    @classmethod
    def rejected(cls, status: int = 400, message: str = "invalid request") -> Fault:
        return cls(status, message)

    @classmethod
    def dropped(cls) -> Fault:
        return cls(drop=True)


Scripted = str | Reply | Fault
Responder = Callable[["Recorded"], Scripted]


@dataclass(frozen=True)
class Recorded:
    """One request as received. Credentials are not kept, only whether they were right."""

    api: Api
    path: str
    model: str | None
    system: str
    messages: tuple[tuple[str, str], ...]  # (role, text)
    max_tokens: int | None
    body: dict[str, Any]
    authorized: bool
    headers: dict[str, str] = field(default_factory=dict)  # without credential headers

    @property
    def prompt(self) -> str:
        """Everything the model would read: the system prompt and every turn."""
        return "\n".join([self.system, *(text for _, text in self.messages)])

    @property
    def last_user(self) -> str:
        return next((text for role, text in reversed(self.messages) if role == "user"), "")


_CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key", "api-key"})


def _text(content: Any) -> str:
    """A message's text: a string, or a list of content blocks (both APIs allow it)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(b.get("text", "")) for b in content if isinstance(b, dict) and "text" in b
        )
    return ""


class _Dropped(Response):
    """Starts a response, sends part of it and stops: the client sees the peer hang up."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"id": "', "more_body": True})
        # Returning now makes uvicorn close the connection with the body incomplete.


class LLMStandIn:
    """The stand-in's state and its FastAPI app (`.app`)."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        responder: Responder | None = None,
        default: Scripted | None = None,
    ) -> None:
        self.api_key = api_key
        self._responder = responder
        self._default = default
        self._queue: deque[Scripted] = deque()
        self._requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.app = self._build_app()

    # --- scripting (from the test's thread) --------------------------------------------------

    def script(self, *replies: Scripted) -> None:
        """Answer the next requests with these, in order."""
        with self._lock:
            self._queue.extend(replies)

    def respond_with(self, responder: Responder | None) -> None:
        """Answer with `responder(request)` once the queue is empty."""
        with self._lock:
            self._responder = responder

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    @property
    def prompts(self) -> list[str]:
        return [r.prompt for r in self.requests]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._queue.clear()

    # --- serving ----------------------------------------------------------------------------

    def _next(self, recorded: Recorded) -> Scripted | None:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            responder = self._responder
        if responder is not None:
            return responder(recorded)
        return self._default

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="docrelay LLM stand-in", docs_url=None, redoc_url=None)

        @app.post("/v1/chat/completions")
        @app.post("/chat/completions")
        async def chat_completions(request: Request) -> Response:
            return await self._handle("openai", request)

        @app.post("/v1/messages")
        async def messages(request: Request) -> Response:
            return await self._handle("anthropic", request)

        @app.post("/_standin/script")
        async def script(request: Request) -> dict[str, int]:
            body = await request.json()
            self.script(*_scripted_from_json(body.get("replies", [])))
            with self._lock:
                return {"queued": len(self._queue)}

        @app.get("/_standin/requests")
        def recorded() -> list[dict[str, Any]]:
            return [
                {"api": r.api, "model": r.model, "system": r.system,
                 "messages": [list(m) for m in r.messages], "authorized": r.authorized}
                for r in self.requests
            ]  # fmt: skip

        @app.delete("/_standin/requests")
        def forget() -> dict[str, bool]:
            self.clear()
            return {"cleared": True}

        return app

    def _authorized(self, api: Api, request: Request) -> bool:
        if self.api_key is None:
            return True
        if api == "anthropic":
            return request.headers.get("x-api-key") == self.api_key
        return request.headers.get("authorization") == f"Bearer {self.api_key}"

    async def _handle(self, api: Api, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _error(api, 400, "the body is not a JSON object")
        authorized = self._authorized(api, request)
        recorded = _record(api, request, body, authorized)
        with self._lock:
            self._requests.append(recorded)
        if not authorized:
            message = "invalid x-api-key" if api == "anthropic" else "Incorrect API key provided"
            return _error(api, 401, message)
        problem = _invalid(api, request, body)
        if problem:
            return _error(api, 400, problem)
        answer = self._next(recorded)
        if answer is None:
            return _error(api, 500, "llm stand-in: no reply scripted for this request")
        if isinstance(answer, Fault):
            if answer.drop:
                return _Dropped()
            headers = {"retry-after": answer.retry_after} if answer.retry_after else None
            return _error(api, answer.status, answer.message, answer.code, headers)
        reply = Reply(answer) if isinstance(answer, str) else answer
        return JSONResponse(self._completion(api, recorded, reply))

    def _completion(self, api: Api, recorded: Recorded, reply: Reply) -> dict[str, Any]:
        model = reply.model or recorded.model or DEFAULT_MODEL
        number = next(self._ids)
        tokens_in = reply.input_tokens
        if tokens_in is None:
            tokens_in = len(recorded.prompt.split())
        tokens_out = reply.output_tokens
        if tokens_out is None:
            tokens_out = len(reply.text.split())
        if api == "anthropic":
            return {
                "id": f"msg_standin_{number}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": reply.text}],
                "stop_reason": "max_tokens" if reply.truncated else "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out},
            }
        return {
            "id": f"chatcmpl-standin-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.text},
                    "finish_reason": "length" if reply.truncated else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": tokens_in,
                "completion_tokens": tokens_out,
                "total_tokens": tokens_in + tokens_out,
            },
        }


def _record(api: Api, request: Request, body: dict[str, Any], authorized: bool) -> Recorded:
    raw = body.get("messages")
    turns = [m for m in raw if isinstance(m, dict)] if isinstance(raw, list) else []
    if api == "openai":
        system = "\n".join(_text(m.get("content")) for m in turns if m.get("role") == "system")
        turns = [m for m in turns if m.get("role") != "system"]
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    else:
        system = _text(body.get("system", ""))
        max_tokens = body.get("max_tokens")
    return Recorded(
        api=api,
        path=request.url.path,
        model=body.get("model"),
        system=system,
        messages=tuple((str(m.get("role")), _text(m.get("content"))) for m in turns),
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
        body=body,
        authorized=authorized,
        headers={k: v for k, v in request.headers.items() if k not in _CREDENTIAL_HEADERS},
    )


def _invalid(api: Api, request: Request, body: dict[str, Any]) -> str | None:
    """What the real API would refuse with 400, on the fields the agent sends."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    if api == "anthropic":
        if not request.headers.get("anthropic-version"):
            return "anthropic-version: header is required"
        if not isinstance(body.get("max_tokens"), int):
            return "max_tokens: field required"
        roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
        if any(role not in ("user", "assistant") for role in roles):
            return "messages: roles must be user or assistant (system is a top-level field)"
        if roles[0] != "user":
            return "messages: the first message must use the user role"
    return None


def _error(
    api: Api,
    status: int,
    message: str,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    if api == "anthropic":
        kind = code or {
            400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
            404: "not_found_error", 429: "rate_limit_error", 529: "overloaded_error",
        }.get(status, "api_error")  # fmt: skip
        body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
    else:
        kind = code or {
            400: "invalid_request_error", 401: "invalid_api_key", 429: "rate_limit_exceeded",
        }.get(status, "server_error")  # fmt: skip
        body = {"error": {"message": message, "type": kind, "param": None, "code": kind}}
    return JSONResponse(body, status_code=status, headers=headers)


def _scripted_from_json(items: Iterable[Any]) -> list[Scripted]:
    """Replies sent over HTTP: a string, {"text": ...} or {"fault": {...Fault fields}}."""
    out: list[Scripted] = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict) and isinstance(item.get("fault"), dict):
            out.append(Fault(**item["fault"]))
        elif isinstance(item, dict):
            out.append(Reply(**item))
    return out


@contextlib.contextmanager
def serving_llm(
    api_key: str | None = None, **kwargs: Any
) -> Iterator[tuple[LLMStandIn, RunningServer]]:
    """A stand-in served on 127.0.0.1 for the duration of the block."""
    stand_in = LLMStandIn(api_key, **kwargs)
    with serving(stand_in.app) as server:
        yield stand_in, server


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--api-key", default=None, help="required key (default: none checked)")
    parser.add_argument(
        "--reply", action="append", default=[], help="a scripted reply (repeatable, in order)"
    )
    args = parser.parse_args(argv)
    stand_in = LLMStandIn(api_key=args.api_key, responder=canned_reply)
    stand_in.script(*args.reply)
    uvicorn.run(stand_in.app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
