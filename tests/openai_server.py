"""A small OpenAI-compatible (and Ollama-compatible) model server for tests, on 127.0.0.1.

It speaks what vLLM, llama.cpp's `llama-server` and Ollama speak: `POST /v1/chat/completions` with
`input_audio` / `audio_url` / `image_url` parts, `POST /api/chat` with media in `images`, `GET /v1/models`.
It decodes the media back (base64 WAV -> float32 16 kHz with soundfile, data-URI JPEG -> a temp file)
into the transformers messages the in-process engine builds, and runs the tiny random checkpoint on
them greedily, one request at a time (a lock), as the in-process engine does with batch size 1: so the
texts must be the same.

For fault cases a test sets attributes of `TestModelServer` directly (the server runs in the test's
process): `faults` is a queue of one-shot behaviours for the next requests ({"status": 429, "retry_after":
0.1}, {"status": 500}, {"drop": True}, {"delay": 2.0}, {"status": 400, "message": ...}, {"payload": {...}}: that
JSON as the reply, with "status" or 200); `fake` answers
without the model after `fake_delay` seconds (fast concurrency tests); `max_context` rejects prompts
longer than it as vLLM does (Ollama's /api/chat only with `"truncate": false`: else it answers, and
the request's record says `truncated`); `refuse_audio` answers audio as a text-only model's server does;
`api_key` demands a bearer key. `in_flight` / `max_in_flight` count requests being answered at once.
"""

from __future__ import annotations

import base64
import binascii
import collections
import io
import json
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class BadRequest(Exception):
    pass


class TestModelServer:
    __test__ = False  # not a pytest class

    def __init__(self, checkpoint: str | Path | None = None):
        self.checkpoint = str(checkpoint) if checkpoint else None
        self.faults: collections.deque[dict[str, Any]] = collections.deque()
        self.fake: Callable[[dict[str, Any]], str] | None = None
        self.fake_delay = 0.0
        self.max_context: int | None = None
        self.refuse_audio = False
        self.api_key: str | None = None
        self.lock = threading.Lock()  # counters
        self.model_lock = threading.Lock()  # one model call at a time
        self.in_flight = 0
        self.max_in_flight = 0
        self.seen: list[dict[str, Any]] = []  # per request: path, status, audio seconds, images
        self._model = None
        self._processor = None
        self._tmp = tempfile.TemporaryDirectory(prefix="g4-test-server-")
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> str:
        handler = type("Handler", (_Handler,), {"app": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        self._tmp.cleanup()

    def reset(self) -> None:
        with self.lock:
            self.faults.clear()
            self.fake, self.fake_delay, self.max_context = None, 0.0, None
            self.refuse_audio, self.api_key = False, None
            self.in_flight = self.max_in_flight = 0
            self.seen.clear()

    # ----------------------------------------------------------------- the model

    def _load(self):
        if self._model is None:
            from transformers import AutoModelForMultimodalLM, AutoProcessor

            assert self.checkpoint, "this server was started without a checkpoint (fake answers only)"
            self._processor = AutoProcessor.from_pretrained(self.checkpoint)
            self._processor.tokenizer.padding_side = "left"
            self._model = AutoModelForMultimodalLM.from_pretrained(self.checkpoint).eval()
        return self._model, self._processor

    def inputs(self, req: dict[str, Any]):
        _, processor = self._load()
        kwargs: dict[str, Any] = {"padding": True}
        if req["images"]:
            kwargs["images_kwargs"] = {"max_soft_tokens": req["image_tokens"]}
        return processor.apply_chat_template([req["messages"]], tokenize=True, return_dict=True,
                                             return_tensors="pt", add_generation_prompt=True,
                                             enable_thinking=req["enable_thinking"], processor_kwargs=kwargs)

    def run_model(self, req: dict[str, Any], inputs) -> str:
        import torch

        from mediapipe_g4.engine import clean_response

        model, processor = self._load()
        kwargs: dict[str, Any] = {"max_new_tokens": req["max_tokens"]}
        if req["greedy"]:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=req["temperature"], top_p=req["top_p"], top_k=req["top_k"])
        inputs = {k: v.to(dtype=torch.float32) if isinstance(v, torch.Tensor) and torch.is_floating_point(v)
                  else v for k, v in inputs.items()}
        length = inputs["input_ids"].shape[1]
        with torch.inference_mode():
            out = model.generate(**inputs, **kwargs)
        tokenizer = processor.tokenizer
        raw = tokenizer.decode(out[0, length:], skip_special_tokens=False)
        prefix = tokenizer.decode(inputs["input_ids"][0], skip_special_tokens=False) \
            if getattr(tokenizer, "response_template", None) else None
        return clean_response(raw, tokenizer=tokenizer, prefix=prefix)

    # ----------------------------------------------------------------- decoding the request

    def _audio(self, data: str) -> Any:
        import soundfile

        try:
            samples, rate = soundfile.read(io.BytesIO(base64.b64decode(data, validate=True)), dtype="float32")
        except (binascii.Error, RuntimeError, ValueError) as exc:
            raise BadRequest(f"audio is not base64 WAV: {exc}") from exc
        if rate != 16000 or samples.ndim != 1:
            raise BadRequest(f"audio must be 16 kHz mono, got {rate} Hz, shape {samples.shape}")
        return samples

    def _image(self, data: bytes) -> str:
        if not data.startswith(b"\xff\xd8"):
            raise BadRequest("image is not a JPEG")
        path = Path(self._tmp.name) / f"{time.monotonic_ns()}-{threading.get_ident()}.jpg"
        path.write_bytes(data)
        return str(path)

    @staticmethod
    def _data_uri(url: str) -> bytes:
        if not url.startswith("data:") or ";base64," not in url:
            raise BadRequest("only base64 data URIs are supported here")
        return base64.b64decode(url.split(";base64,", 1)[1])

    def decode(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """The request as transformers messages and settings."""
        messages, audio_seconds, images = [], 0.0, 0
        for m in body.get("messages", []):
            role, content = m.get("role"), m.get("content")
            parts: list[dict[str, Any]] = []
            if isinstance(content, str):
                if content:
                    parts.append({"type": "text", "text": content})
            else:
                for p in content or []:
                    kind = p.get("type")
                    if kind == "text":
                        parts.append({"type": "text", "text": p["text"]})
                    elif kind == "input_audio" and path.endswith("/chat/completions"):
                        parts.append({"type": "audio", "audio": self._audio(p["input_audio"]["data"])})
                    elif kind == "audio_url" and path.endswith("/chat/completions"):
                        url = p["audio_url"]["url"]
                        parts.append({"type": "audio", "audio": self._audio(url.split(";base64,", 1)[-1])})
                    elif kind == "image_url":
                        parts.append({"type": "image", "path": self._image(self._data_uri(p["image_url"]["url"]))})
                    else:
                        raise BadRequest(f"Unknown part type: {kind}")
            for blob in m.get("images") or []:  # Ollama: media after the text
                raw = base64.b64decode(blob)
                if raw[:4] == b"RIFF":
                    parts.append({"type": "audio", "audio": self._audio(blob)})
                else:
                    parts.append({"type": "image", "path": self._image(raw)})
            for p in parts:
                if p["type"] == "audio":
                    audio_seconds += len(p["audio"]) / 16000
                images += p["type"] == "image"
            messages.append({"role": role, "content": parts})
        if path == "/api/chat":
            opts = body.get("options") or {}
            temperature = opts.get("temperature", 0.8)
            return {"messages": messages, "max_tokens": int(opts.get("num_predict", 128)),
                    "greedy": temperature == 0, "temperature": temperature, "top_p": opts.get("top_p", 0.9),
                    "top_k": opts.get("top_k", 40), "enable_thinking": bool(body.get("think")),
                    "image_tokens": 280, "images": images, "audio_seconds": audio_seconds}
        temperature = body.get("temperature", 1.0)
        return {"messages": messages, "max_tokens": int(body.get("max_tokens") or body.get("max_completion_tokens") or 16),
                "greedy": temperature == 0, "temperature": temperature, "top_p": body.get("top_p", 1.0),
                "top_k": body.get("top_k", 64),
                # llama-server's default: a template that can think (Gemma 4's) thinks unless told otherwise
                "enable_thinking": bool((body.get("chat_template_kwargs") or {}).get("enable_thinking", True)),
                "image_tokens": int((body.get("mm_processor_kwargs") or {}).get("max_soft_tokens", 280)),
                "images": images, "audio_seconds": audio_seconds}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers
    app: TestModelServer

    def log_message(self, *args) -> None:  # quiet
        pass

    @property
    def route(self) -> str:
        """The path without its query, as real servers route (errors echo the whole path, as some do)."""
        return self.path.split("?", 1)[0]

    def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        record = getattr(self, "record", None)
        if record is not None:  # before the reply: a client that has it may look at `seen` at once
            record["status"] = status
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
            self.close_connection = True

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        if self.route == "/api/chat":
            self._send(status, {"error": message}, headers)
        else:  # vLLM's shape
            self._send(status, {"object": "error", "message": message, "type": "BadRequestError", "param": None,
                                "code": status}, headers)

    def do_GET(self) -> None:
        self.record = None  # (a keep-alive connection's last POST is not this one)
        if self.route.rstrip("/") in ("/v1/models", "/models"):
            self._send(200, {"object": "list", "data": [{"id": "tiny", "object": "model",
                                                         "max_model_len": self.app.max_context or 8192}]})
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:
        app = self.app
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        with app.lock:
            app.in_flight += 1
            app.max_in_flight = max(app.max_in_flight, app.in_flight)
            fault = app.faults.popleft() if app.faults else None
            record: dict[str, Any] = {"path": self.path, "status": None}
            app.seen.append(record)
        self.record = record
        try:
            record["status"] = self._answer(body, fault, record)
        finally:
            with app.lock:
                app.in_flight -= 1

    def _answer(self, body: dict[str, Any], fault: dict[str, Any] | None, record: dict[str, Any]) -> int | str:
        app = self.app
        if self.route not in ("/v1/chat/completions", "/api/chat"):
            self._error(404, f"no route {self.path}")
            return 404
        if app.api_key and self.headers.get("Authorization") != f"Bearer {app.api_key}":
            self._error(401, "Invalid API key")
            return 401
        if fault:
            time.sleep(fault.get("delay", 0.0))
            if fault.get("drop"):
                self.close_connection = True  # no reply: the client sees the connection closed
                return "dropped"
            if "payload" in fault:  # a reply exactly as some server shapes it
                self._send(fault.get("status", 200), fault["payload"])
                return fault.get("status", 200)
            if "status" in fault:
                headers = {"Retry-After": str(fault["retry_after"])} if "retry_after" in fault else None
                self._error(fault["status"], fault.get("message", f"injected {fault['status']}"), headers)
                return fault["status"]
        try:
            req = app.decode(self.route, body)
        except (BadRequest, KeyError, TypeError) as exc:
            self._error(400, str(exc))
            return 400
        record.update(audio_seconds=round(req["audio_seconds"], 3), images=req["images"])
        if app.refuse_audio and req["audio_seconds"]:
            self._error(400, "At most 0 audio(s) may be provided in one prompt: this model does not support "
                             "audio input")
            return 400
        if app.fake is not None:
            time.sleep(app.fake_delay)
            text = app.fake(req)
        else:
            with app.model_lock:
                inputs = app.inputs(req)
                prompt = int(inputs["input_ids"].shape[1])
                if app.max_context and self.route == "/api/chat" and prompt > app.max_context:
                    if body.get("truncate") is not False:  # Ollama cuts the prompt (its start and end) and answers
                        record["truncated"] = True
                    else:
                        self._error(400, "the input length exceeds the context length")
                        return 400
                elif app.max_context and self.route != "/api/chat" and prompt + req["max_tokens"] > app.max_context:
                    self._error(400, f"This model's maximum context length is {app.max_context} tokens. However, "
                                     f"you requested {prompt + req['max_tokens']} tokens ({prompt} in the messages, "
                                     f"{req['max_tokens']} in the completion). Please reduce the length of the "
                                     "messages or completion.")
                    return 400
                text = app.run_model(req, inputs)
        if self.route == "/api/chat":
            self._send(200, {"model": body.get("model"), "created_at": "2025-01-01T00:00:00Z",
                             "message": {"role": "assistant", "content": text}, "done": True, "done_reason": "stop"})
        else:
            self._send(200, {"id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
                             "model": body.get("model"), "choices": [{"index": 0, "finish_reason": "stop",
                                                                       "message": {"role": "assistant", "content": text}}],
                             "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}})
        return 200


if __name__ == "__main__":  # python tests/openai_server.py CHECKPOINT: serve until Ctrl-C
    import sys

    server = TestModelServer(sys.argv[1])
    print(server.start(), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
