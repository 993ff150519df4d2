"""An OpenAI-compatible model server for a machine without a GPU: `tasks.model` behind
`POST /v1/chat/completions`, answering in vLLM's shape, including what vLLM adds when a
request asks for `return_token_ids` (the response's `prompt_token_ids`, each choice's
`token_ids`) and `logprobs`: the fields upstream 1.0's gateway records and its trainer reads
back as triplets.

It is not a language model and says so in `owned_by`. Its tokenizer is UTF-8 bytes (a token
id is a byte value, so `bytes(ids).decode()` reads a token list back); the prompt is the
messages in a chat template (`<|role|>` headers), and the answer is deterministic, so every
log probability is 0. Streaming is refused with a 400, as a server that cannot stream would.

    python examples/training/stand_in_model.py --port 8000     # http://127.0.0.1:8000/v1

`train_v1.py` starts one itself unless it is given `--model-url` (a real vLLM, say).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Tuple

from tasks import model

MAX_BODY_BYTES = 1 << 20


def encode(text: str) -> List[int]:
    """The byte tokenizer: one token per UTF-8 byte."""
    return list(text.encode("utf-8"))


def render_chat(messages: List[Dict[str, Any]]) -> str:
    """The chat template: each message under its role's header, then the assistant's."""
    parts = []
    for message in messages:
        content = message.get("content") or ""
        if isinstance(content, list):  # content parts: only the text ones reach this model
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        parts.append(f"<|{message.get('role', 'user')}|>\n{content}\n")
    return "".join(parts) + "<|assistant|>\n"


def complete(request: Dict[str, Any]) -> Tuple[int, Dict[str, Any]]:
    """One chat completion: (HTTP status, body)."""
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return 400, error("'messages' must be a non-empty list of message objects")
    if request.get("stream"):
        return 400, error("this stand-in does not stream; send stream=false")
    max_tokens = request.get("max_tokens") or request.get("max_completion_tokens") or 256
    if not isinstance(max_tokens, int) or max_tokens < 1:
        return 400, error("'max_tokens' must be a positive integer")

    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), messages[-1])
    answer_ids = encode(model(str(last_user.get("content") or "")))
    finish_reason = "stop"
    if len(answer_ids) > max_tokens:
        answer_ids, finish_reason = answer_ids[:max_tokens], "length"
    answer = bytes(answer_ids).decode("utf-8", errors="ignore")
    prompt_ids = encode(render_chat(messages))
    with_ids = request.get("return_token_ids") is True
    logprobs = None
    if request.get("logprobs") is True:
        logprobs = {
            "content": [
                {"token": bytes([t]).decode("latin-1"), "logprob": 0.0, "bytes": [t], "top_logprobs": []}
                for t in answer_ids
            ]
        }
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": answer, "tool_calls": []},
        "logprobs": logprobs,
        "finish_reason": finish_reason,
        "stop_reason": None,
        "token_ids": answer_ids if with_ids else None,
    }
    return 200, {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model") or "stand-in",
        "choices": [choice],
        "usage": {
            "prompt_tokens": len(prompt_ids),
            "completion_tokens": len(answer_ids),
            "total_tokens": len(prompt_ids) + len(answer_ids),
        },
        "prompt_logprobs": None,
        "prompt_token_ids": prompt_ids if with_ids else None,
    }


def error(message: str, status: int = 400) -> Dict[str, Any]:
    return {"error": {"message": message, "type": "BadRequestError", "code": status}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path in ("/health", "/ping"):
            self.reply(200, {})
        elif self.path == "/v1/models":
            self.reply(200, {"object": "list", "data": [{"id": "stand-in", "object": "model", "owned_by": "agl-example (not an LLM)"}]})
        else:
            self.reply(404, error(f"no route {self.path}", 404))

    def do_POST(self) -> None:
        if self.path != "/v1/chat/completions":
            self.reply(404, error(f"no route {self.path}", 404))
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.reply(413, error(f"body over {MAX_BODY_BYTES} bytes", 413))
            return
        try:
            request = json.loads(self.rfile.read(length))
        except ValueError as exc:
            self.reply(400, error(f"body is not JSON: {exc}"))
            return
        if not isinstance(request, dict):
            self.reply(400, error("body must be a JSON object"))
            return
        self.reply(*complete(request))

    def reply(self, status: int, body: Dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the store records every call
        pass


def serve(host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """Start the server on a daemon thread; its address is `server.server_address`."""
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="stand-in-model", daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"stand-in model at http://{args.host}:{server.server_address[1]}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
