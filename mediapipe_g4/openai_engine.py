"""Gemma 4 on a model server: vLLM, llama.cpp's `llama-server`, Ollama, or anything that speaks the
OpenAI chat-completions API.

The planned requests go over HTTP instead of into a model in this process. Audio clips travel as
base64 16 kHz WAV (float32 samples, so the server hears exactly what the in-process engine would),
keyframes as JPEG data URIs. Servers differ in how they take media; `api` picks the encoding:

- `openai`: `input_audio` parts ({"data": base64 WAV, "format": "wav"}) and `image_url` data URIs
  (OpenAI's own format; vLLM and llama.cpp's `llama-server` accept it).
- `vllm`: audio as `audio_url` data URIs (vLLM's own part type, accepted by every vLLM version with
  audio models), images as `image_url`; thinking is switched through `chat_template_kwargs`.
- `ollama`: Ollama's native `/api/chat`: the text of the user turn as `content` and every media blob,
  audio included, base64 in `images` (the server tells WAV from JPEG by its bytes); `options.num_ctx`
  set to the run's context budget (Ollama's own default is a few thousand tokens).

Many requests are in flight at once (at most `concurrency`, across every engine sharing one server),
so the server's continuous batching stays full; each answer is handed back the moment it finishes
(`iter_generate`), so `CachedEngine` keeps it before the rest are done. Dropped connections, 429 and 5xx are
retried with exponential backoff and jitter (honouring Retry-After), a timeout once; a server still loading its
model (llama.cpp's 503 "Loading model") is waited for, up to `load_wait`, without using up the tries; a transcription
request the server finds too long is split at a pause into two halves whose texts are joined; other
too-long requests, a server that is down, one that refuses audio or the API key are clear errors.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import queue
import random
import re
import threading
import time
import wave
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from .engine import AudioPart, EngineRequest, Hook, ImagePart, TextPart, clean_response
from .errors import ModelError, PlanError
from .records import SAMPLE_RATE

log = logging.getLogger("mediapipe_g4")

SERVER_APIS = ("openai", "vllm", "ollama")
DEFAULT_CONCURRENCY = 8
# The notes budget when the model runs on a server: this machine's memory says nothing about the
# server's, so plan for a context every set-up in docs/SERVING.md serves (`--context-tokens` to change).
SERVER_CONTEXT_TOKENS = 32768
DEFAULT_IMAGE_TOKENS = 280  # what Gemma 4's processor does when not told otherwise
MIN_SPLIT_SECONDS = 2.0  # a clip shorter than this is not split further

_TOO_LONG = re.compile(
    r"context length|context size|context window|maximum context|max_model_len|max-model-len|n_ctx|"
    r"too long|too many tokens|exceeds? the|exceed_context|longer than the model|reduce the length", re.IGNORECASE)
_LIMIT = re.compile(r"(?:maximum context length is|context size(?: of)?|n_ctx[\"']?\s*[:=]?|"
                    r"max_model_len[\"']?\s*[:=]?|maximum model length of|\(context length)\s*\(?(\d+)",
                    re.IGNORECASE)
# A too-long prompt as Ollama and llama.cpp word it: unmistakable whatever the status (retrying it cannot help).
_EXCEEDS_CONTEXT = re.compile(r"exceeds? the (?:available )?context (?:length|size)|exceed_context_size", re.IGNORECASE)
_LOADING = re.compile(r"\bloading (?:the )?model\b|\bmodel is (?:still )?loading\b", re.IGNORECASE)
_REFUSED = re.compile(r"not support|unsupported|mmproj|unknown|at most 0|does not|doesn't|cannot|can't|"
                      r"invalid|not (?:a )?multimodal|no (?:audio|vision)", re.IGNORECASE)


@dataclass(frozen=True)
class ServerOptions:
    url: str  # e.g. http://localhost:8000/v1 (vLLM), http://localhost:8080 (llama.cpp), http://localhost:11434
    api: str = "openai"  # openai | vllm | ollama: how media and settings are encoded
    api_key_env: str | None = None  # the NAME of the environment variable that holds the key, never the key
    concurrency: int = DEFAULT_CONCURRENCY  # requests in flight at once
    served_model: str | None = None  # the model name the server knows; None: the --model value
    timeout: float = 600.0  # seconds to wait for one answer (the server may queue it behind others)
    connect_timeout: float = 10.0
    max_tries: int = 5  # per request, for dropped connections, 429 and 5xx
    # ... and for timeouts at most this many: a request that got no answer within `timeout` is likely to get none
    # the next time either (a slow server; the one it gave up on may still be running there), and each try is a wait
    # of the whole `timeout`: five were 50 minutes before the error that says to raise --server-timeout
    timeout_tries: int = 2
    backoff: float = 1.0  # first wait between tries, doubled each time, with jitter
    max_backoff: float = 60.0
    load_wait: float = 600.0  # seconds to wait for a server that says it is still loading its model
    load_poll: float = 5.0  # and how often to ask it again meanwhile
    context_tokens: int | None = None  # Ollama's num_ctx (the run's notes budget)

    def __post_init__(self) -> None:
        if self.api not in SERVER_APIS:
            raise ModelError(f"--server-api takes {', '.join(SERVER_APIS)}, not {self.api!r}")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ModelError(f"--server must be an http(s) URL such as http://localhost:8000/v1, not {self.url!r}")
        if self.concurrency < 1:
            raise ModelError("--concurrency must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["url"] = redact_url(self.url)
        return out


def redact_url(url: str) -> str:
    """The URL without a user:password part or a query's values (`?token=...`): a key must never reach a log or
    a result file."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        parts = parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1])
    if parts.query:
        parts = parts._replace(query="&".join(f"{q.split('=', 1)[0]}=***" for q in parts.query.split("&")))
    return urlunsplit(parts)


def endpoint(url: str, api: str) -> str:
    """The chat endpoint for a server URL given with or without /v1 (or the full path). A query (a gateway's
    `?api-key=...`) stays at the end, where it belongs."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=_endpoint_path(parts.path, api), fragment=""))


def _endpoint_path(path: str, api: str) -> str:
    base = path.rstrip("/")
    if api == "ollama":
        if base.endswith("/api/chat"):
            return base
        for tail in ("/v1/chat/completions", "/v1", "/api"):
            if base.endswith(tail):
                base = base[: -len(tail)]
                break
        return base + "/api/chat"
    if base.endswith("/chat/completions"):
        return base
    if base.endswith("/v1"):
        return base + "/chat/completions"
    return base + "/v1/chat/completions"


# --------------------------------------------------------------------------- media encoding


def wav_bytes(samples: np.ndarray, *, float32: bool = True) -> bytes:
    """16 kHz mono WAV: IEEE float32 (lossless; vLLM's and llama.cpp's decoders read it) or 16-bit PCM."""
    samples = np.asarray(samples, dtype=np.float32)
    if not float32:
        pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2")
        out = io.BytesIO()
        with wave.open(out, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes(pcm.tobytes())
        return out.getvalue()
    data = samples.astype("<f4").tobytes()
    # RIFF/WAVE with a WAVE_FORMAT_IEEE_FLOAT (3) fmt chunk and a fact chunk, as the spec asks for float.
    fmt = (3).to_bytes(2, "little") + (1).to_bytes(2, "little") + SAMPLE_RATE.to_bytes(4, "little") \
        + (SAMPLE_RATE * 4).to_bytes(4, "little") + (4).to_bytes(2, "little") + (32).to_bytes(2, "little") \
        + (0).to_bytes(2, "little")
    body = b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt \
        + b"fact" + (4).to_bytes(4, "little") + len(samples).to_bytes(4, "little") \
        + b"data" + len(data).to_bytes(4, "little") + data
    return b"RIFF" + len(body).to_bytes(4, "little") + body


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _image_bytes(part: ImagePart) -> tuple[bytes, str]:
    path = Path(part.path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read the keyframe {path} ({exc}); run again with --fresh") from exc
    mime = "image/png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "image/jpeg"
    return data, mime


def request_body(request: EngineRequest, model: str, options: ServerOptions) -> dict[str, Any]:
    """The JSON body of one request in the server's dialect."""
    s = request.settings
    if options.api == "ollama":
        texts = [p.text for p in request.sent_parts if isinstance(p, TextPart)]
        media = []
        for p in request.parts:
            if isinstance(p, AudioPart):
                media.append(_b64(wav_bytes(p.samples(), float32=False)))  # Ollama decodes 16-bit PCM
            elif isinstance(p, ImagePart):
                media.append(_b64(_image_bytes(p)[0]))
        user: dict[str, Any] = {"role": "user", "content": "\n".join(texts)}
        if media:
            user["images"] = media
        messages = [user]
        opts: dict[str, Any] = {"num_predict": s.max_new_tokens}
        if s.greedy:
            opts.update(temperature=0.0, top_k=1)
        else:
            opts.update(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k)
            if s.seed is not None:
                opts["seed"] = s.seed
        if options.context_tokens:
            opts["num_ctx"] = options.context_tokens
        # think: explicit, since Ollama may turn thinking on by default for models that can think. truncate and
        # shift off: by default Ollama cuts a prompt longer than num_ctx (keeping its first tokens and its end) and
        # answers anyway, and shifts the context when the answer outgrows it; off, too long is an error, as on vLLM.
        return {"model": model, "messages": messages, "stream": False, "think": s.enable_thinking, "options": opts,
                "truncate": False, "shift": False}

    content: list[dict[str, Any]] = []
    for p in request.sent_parts:
        if isinstance(p, TextPart):
            content.append({"type": "text", "text": p.text})
        elif isinstance(p, AudioPart):
            data = _b64(wav_bytes(p.samples()))
            if options.api == "vllm":
                content.append({"type": "audio_url", "audio_url": {"url": f"data:audio/wav;base64,{data}"}})
            else:
                content.append({"type": "input_audio", "input_audio": {"data": data, "format": "wav"}})
        else:
            data, mime = _image_bytes(p)
            content.append({"type": "image_url", "image_url": {"url": f"data:{mime};base64,{_b64(data)}"}})
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": s.max_new_tokens,
            "stream": False}
    if s.greedy:
        body["temperature"] = 0.0  # greedy on vLLM, llama.cpp and Ollama
    else:  # top_k is not OpenAI's, but vLLM and llama.cpp take it (the model card's sampling needs it)
        body.update(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k)
        if s.seed is not None:  # OpenAI's, vLLM's and llama.cpp's per-request seed
            body["seed"] = s.seed
    # Always said: llama-server thinks by default with a template that can (Gemma 4's can), and a thought would
    # spend a transcription's 320 tokens before the answer starts. vLLM and llama.cpp take it; others ignore it.
    body["chat_template_kwargs"] = {"enable_thinking": s.enable_thinking}
    if request.images and request.image_tokens != DEFAULT_IMAGE_TOKENS:
        body["mm_processor_kwargs"] = {"max_soft_tokens": request.image_tokens}
    return body


def answer_text(payload: Any, api: str, *, thinking: bool = False) -> str:
    """The answer in a server's reply, cleaned like the in-process engine's (thought blocks, markers).

    A server with a reasoning parser (vLLM --reasoning-parser, llama.cpp --reasoning-format, Ollama) can file a
    whole answer under `reasoning_content` / `reasoning` / `thinking` and leave `content` empty when it sees no
    end-of-thought marker; with thinking not asked for, that text is the answer, not a thought.
    """
    try:
        message = payload["message"] if api == "ollama" else payload["choices"][0]["message"]
        content = message.get("content")
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise ModelError(f"the model server's reply is not a chat completion ({str(payload)[:200]})") from exc
    if not (isinstance(content, str) and content.strip()) and not thinking:
        reasoning = next((message[k] for k in ("reasoning_content", "reasoning", "thinking")
                          if isinstance(message.get(k), str) and message[k].strip()), None)
        if reasoning is not None:
            log.debug("the model server gave the answer as reasoning, with no content; taking it as the answer")
            content = reasoning
    return clean_response(content if isinstance(content, str) else "")  # <think> blocks too


def error_message(response: Any) -> str:
    """The message of an error reply: OpenAI/llama.cpp {"error": {"message"}}, vLLM {"message"}, Ollama {"error"}."""
    try:
        payload = response.json()
    except ValueError:  # a proxy's HTML page ("<h1>502 Bad Gateway</h1>"): its words, not its tags
        text = re.sub(r"<[^>]*>", " ", response.text or "") if "<" in (response.text or "") else response.text
        return " ".join((text or response.reason or "").split())[:500]
    if isinstance(payload, dict):
        err = payload.get("error", payload)
        if isinstance(err, dict):
            message = err.get("message") or err.get("detail") or json.dumps(err)[:500]
            if "n_ctx" in err and "n_ctx" not in str(message):
                message = f"{message} (n_ctx {err['n_ctx']})"
            return str(message)[:500]
        if isinstance(err, str):
            return err[:500]
        if "detail" in payload:
            return str(payload["detail"])[:500]
    return str(payload)[:500]


def retry_after(response: Any) -> float | None:
    value = response.headers.get("Retry-After") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class _TooLong(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class _Retry(Exception):
    def __init__(self, what: str, wait: float | None = None, loading: bool = False):
        super().__init__(what)
        self.what = what
        self.wait = wait
        self.loading = loading  # the server is up but still loading its model: a wait, not a failure


# --------------------------------------------------------------------------- the server connection


class ModelServer:
    """One server URL: its HTTP sessions (one per thread), the bound on requests in flight, the key.

    Engines for several models (--model, --transcribe-model) on one server share it, so --concurrency
    bounds everything sent to that URL.
    """

    def __init__(self, options: ServerOptions):
        self.options = options
        self.endpoint = endpoint(options.url, options.api)
        self.shown_url = redact_url(options.url)
        self._key = self._read_key(options.api_key_env)
        self._secrets = _url_secrets(options.url) + ([self._key] if self._key else [])
        self._slots = threading.BoundedSemaphore(options.concurrency)
        self._local = threading.local()
        self._lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests this process had at the server at once
        self.reached = False  # a server that answered once and then refuses connections is restarting
        self._said_loading = False  # "still loading its model", said once a run
        self.tries = 0  # HTTP requests sent, retries included

    def check_reachable(self, timeout: float = 3.0) -> None:
        """A ModelError at once when nothing listens at the server's address (before a recording is decoded and
        its speakers found, which can take minutes), else nothing: whether it serves the model is for the
        first request to find."""
        import socket

        import requests

        if requests.utils.get_environ_proxies(self.options.url):  # the requests go by the proxy: so would a check
            return
        parts = urlsplit(self.options.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname or "localhost", port), timeout=timeout).close()
        except OSError as exc:
            raise ModelError(f"cannot reach the model server at {self.shown_url}: {exc.strerror or exc}; "
                             "start it (docs/SERVING.md) or check --server") from None

    @staticmethod
    def _read_key(name: str | None) -> str | None:
        if not name:
            return None
        key = (os.environ.get(name) or "").strip()  # a key pasted with its newline
        if not key:
            raise ModelError(f"--api-key-env {name}: the environment variable {name} is not set; "
                             f"export {name}=... with the server's API key")
        if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
            raise ModelError(f"--api-key-env {name}: the key in {name} holds spaces or characters an HTTP header "
                             "cannot carry; check it (it is not shown here)")
        return key

    def scrub(self, text: str) -> str:
        """`text` (a server's error, a connection error naming the URL) without the key or the URL's secrets."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _short(self, exc: Exception) -> str:
        return self.scrub(_short(exc))

    def _tls_problem(self, exc: Exception) -> str:
        text = str(exc)
        found = re.search(r"\[SSL[^\]]*\][^'\")(]*|certificate verify failed[^'\")(]*", text)
        detail = self.scrub((found.group(0) if found else _short(exc)).strip(" .,"))
        if "certificate verify failed" in text.lower():
            return (f"the model server at {self.shown_url} has a certificate this machine does not trust ({detail}); "
                    "set REQUESTS_CA_BUNDLE to the CA file that signed it, or check the host name in --server")
        if re.search(r"wrong.version.number|record.layer.failure|unknown.protocol|packet.length.too.long|http.request",
                     text, re.IGNORECASE):
            return (f"the model server at {self.shown_url} does not speak https ({detail}); give --server as "
                    "http://...")
        return f"no TLS connection to the model server at {self.shown_url} ({detail}); check --server (http or https)"

    def _session(self):
        session = getattr(self._local, "session", None)
        if session is None:
            import requests

            session = requests.Session()
            session.headers["User-Agent"] = "g4media"
            if self._key:
                session.headers["Authorization"] = f"Bearer {self._key}"
            self._local.session = session
        return session

    def post(self, body: dict[str, Any], what: str) -> Any:
        """The JSON reply to `body`, retried as the module docstring says; errors are ModelErrors."""
        import requests

        options = self.options
        attempt = timeouts = 0
        loading_since: float | None = None
        while True:
            attempt += 1
            wait: float | None = None
            try:
                return self._post_once(body, what)
            except _Retry as problem:
                if problem.loading and self._still_loading(loading_since):
                    loading_since = loading_since or time.monotonic()
                    attempt -= 1  # started with the server, g4media waits for its model as long as `load_wait`
                    time.sleep(options.load_poll if problem.wait is None else min(problem.wait, options.load_poll))
                    continue
                if attempt >= options.max_tries:
                    raise ModelError(f"the model server at {self.shown_url} kept failing ({problem.what}; "
                                     f"{attempt} tries); check the server's log, or lower --concurrency") from None
                wait = problem.wait
                reason = problem.what
            except requests.exceptions.SSLError as exc:  # not retried: the handshake fails the same way each time
                raise ModelError(self._tls_problem(exc)) from None
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                refused = isinstance(exc, requests.ConnectionError) and _refused(exc)
                if refused and (not self.reached or attempt >= options.max_tries):
                    raise ModelError(f"cannot reach the model server at {self.shown_url}: {self._short(exc)}; "
                                     "start it (docs/SERVING.md) or check --server") from None
                if attempt >= options.max_tries:  # it was reached: it accepts connections and closes them
                    https = "; if it serves https, give --server as https://..." \
                        if urlsplit(options.url).scheme == "http" else ""
                    raise ModelError(f"the model server at {self.shown_url} kept closing the connection without an "
                                     f"answer ({self._short(exc)}; {attempt} tries); check the server's log"
                                     f"{https}") from None
                reason = "the connection was refused" if refused else f"the connection dropped ({self._short(exc)})"
            except requests.Timeout:
                timeouts += 1
                if attempt >= options.max_tries or timeouts >= options.timeout_tries:
                    raise ModelError(f"the model server at {self.shown_url} did not answer a {what} request "
                                     f"within {options.timeout:g} s, {timeouts} time{'s' if timeouts > 1 else ''}; "
                                     "raise --server-timeout or lower --concurrency") from None
                reason = f"no answer within {options.timeout:g} s"
                # Said without -v: each of these waits is the whole --server-timeout, minutes with nothing shown.
                left = options.timeout_tries - timeouts
                log.warning("model server at %s: %s; asking %s", self.shown_url, reason,
                            "once more" if left == 1 else f"again (at most {left} more times)")
            backoff = min(options.max_backoff, options.backoff * 2 ** (attempt - 1))
            delay = backoff * random.uniform(0.5, 1.0) if wait is None else min(max(wait, 0.0), 300.0)
            log.info("model server: %s; try %d of %d in %.1f s", reason, attempt + 1, options.max_tries, delay)
            time.sleep(delay)

    def _still_loading(self, since: float | None) -> bool:
        """Whether to wait on for a server that is loading its model (said once, the first time)."""
        if since is None:
            with self._lock:
                first, self._said_loading = not self._said_loading, True
            if first:
                log.warning("the model server at %s is still loading its model; waiting for it (at most %.0f s)",
                            self.shown_url, self.options.load_wait)
            return True
        return time.monotonic() - since < self.options.load_wait

    def _post_once(self, body: dict[str, Any], what: str) -> Any:
        with self._slots:
            with self._lock:
                self.in_flight += 1
                self.tries += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                response = self._session().post(self.endpoint, json=body,
                                                 timeout=(self.options.connect_timeout, self.options.timeout))
            finally:
                with self._lock:
                    self.in_flight -= 1
        self.reached = True
        status = response.status_code
        if status == 200:
            try:
                return response.json()
            except ValueError as exc:
                raise _Retry(f"a reply that is not JSON ({self.scrub(response.text[:100])!r})") from exc
        message = self.scrub(error_message(response))
        if status >= 500 and _EXCEEDS_CONTEXT.search(message):  # Ollama (some versions) says too long with a 500
            raise _TooLong(message)
        if status == 429 or status >= 500 and not _refuses_media(message, body):
            raise _Retry(f"HTTP {status}: {message[:200]}", retry_after(response),
                         loading=status == 503 and bool(_LOADING.search(message)))
        if status in (400, 413, 422) and _TOO_LONG.search(message):
            raise _TooLong(message)
        if _refuses_media(message, body):
            media = "audio" if "audio" in message.lower() or not _has_image(body) else "images"
            others = ", ".join(f"--server-api {a}" for a in SERVER_APIS if a != self.options.api)
            raise ModelError(f"the model server at {self.shown_url} does not take {media} in this form "
                             f"(HTTP {status}: {message[:300]}); serve an audio-capable Gemma 4 "
                             f"(google/gemma-4-12B-it, or -E4B-it; llama.cpp needs its --mmproj file), or try "
                             f"{others} (now --server-api {self.options.api})")
        if status in (401, 403):
            hint = (f"check the key in ${self.options.api_key_env}" if self.options.api_key_env
                    else "pass --api-key-env NAME with the key in the environment variable NAME")
            raise ModelError(f"the model server at {self.shown_url} refused the request (HTTP {status}: "
                             f"{message[:200]}); {hint}")
        if status == 404:
            # Ollama has no /v1/models on its native API: `ollama list` names what it has, `ollama pull` fetches.
            names = "`ollama list` names them, or `ollama pull` it" if self.options.api == "ollama" \
                else "GET /v1/models lists them"
            raise ModelError(f"the model server at {self.shown_url} has no model {body.get('model')!r} or no "
                             f"{urlsplit(self.endpoint).path} endpoint (HTTP 404: {message[:200]}); pass "
                             f"--served-model with the name it serves ({names}) and check --server and --server-api")
        # What else a server refuses is its own rule (a sampling setting, a field it does not know): its log says
        # which, and --server-api picks the request format the server expects.
        raise ModelError(f"the model server at {self.shown_url} rejected a {what} request (HTTP {status}: "
                         f"{message[:300]}); check --server-api ({self.options.api} now) and the server's log")


def _refused(exc: Exception) -> bool:
    text = repr(exc).lower()
    return "refused" in text or "failed to establish a new connection" in text or "name or service" in text \
        or "nodename nor servname" in text


def _url_secrets(url: str) -> list[str]:
    """What in a server URL is a secret: the password, and the query (`?api-key=...`), whole and value by value."""
    parts = urlsplit(url)
    found = [parts.password or "", parts.query]
    found += [q.split("=", 1)[1] for q in parts.query.split("&") if "=" in q]
    return sorted({f for f in found if len(f) >= 3}, key=len, reverse=True)  # the whole query before its values


def _short(exc: Exception) -> str:
    text = str(exc)
    found = re.search(r"\[Errno -?\d+\] [^'\")]+|Connection (?:aborted|reset|refused)[^'\")]*|RemoteDisconnected[^)]*",
                      text)
    return (found.group(0) if found else text)[:160].strip(" .,'\"")


def _has_part(body: dict[str, Any], types: tuple[str, ...]) -> bool:
    for message in body.get("messages", ()):
        content = message.get("content")
        if isinstance(content, list) and any(p.get("type") in types for p in content):
            return True
        if types == ("images",) and message.get("images"):
            return True
    return False


def _has_image(body: dict[str, Any]) -> bool:
    return _has_part(body, ("image_url",)) or _has_part(body, ("images",))


def _refuses_media(message: str, body: dict[str, Any]) -> bool:
    lower = message.lower()
    has_audio = _has_part(body, ("input_audio", "audio_url")) or _has_part(body, ("images",))
    if not (has_audio or _has_image(body)) or not _REFUSED.search(lower):
        return False
    return any(word in lower for word in ("audio", "image", "modalit", "content part", "part type",
                                          "unsupported content", "multimodal", "mmproj", "vision"))


# --------------------------------------------------------------------------- the engine


class OpenAIEngine:
    """Gemma 4 behind an OpenAI-compatible (or Ollama) server; same interface as the in-process engine."""

    name = "openai"
    streams_answers = True  # CachedEngine: take answers from iter_generate as they finish

    def __init__(self, model: str, options: ServerOptions, *, server: ModelServer | None = None,
                 processor: Any = None):
        self.model = model
        self.options = options
        self.served_model = options.served_model or model
        self.server = server or ModelServer(options)
        # The planner counts notes tokens exactly with the processor when its files are here (no weights).
        self.processor = processor if processor is not None else _local_processor(model)

    @property
    def concurrency(self) -> int:
        return self.options.concurrency

    def generate(self, requests: Sequence[EngineRequest], hook: Hook | None = None) -> list[str]:
        """Texts for `requests`, in their order, with up to `concurrency` requests at the server at once."""
        out: list[str] = [""] * len(requests)
        for i, text in self.iter_generate(requests, hook=hook):
            out[i] = text
        return out

    def iter_generate(self, requests: Sequence[EngineRequest], hook: Hook | None = None) -> Iterator[tuple[int, str]]:
        """(index, text) for each request as it finishes. On a fatal error no new request is sent, those in
        flight are waited for and yielded, then the error is raised."""
        total = len(requests)
        if not total:
            return
        jobs: queue.SimpleQueue[int] = queue.SimpleQueue()
        for i in range(total):
            jobs.put(i)
        results: queue.SimpleQueue[tuple[int, str | None, BaseException | None]] = queue.SimpleQueue()
        stop = threading.Event()

        def work() -> None:
            while not stop.is_set():
                try:
                    i = jobs.get_nowait()
                except queue.Empty:
                    return
                try:
                    results.put((i, self.answer(requests[i]), None))
                except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                    stop.set()  # nothing new is sent after a fatal error
                    results.put((i, None, exc))

        # Daemon threads: Ctrl-C ends the run at once instead of waiting for answers in flight.
        threads = [threading.Thread(target=work, name=f"g4media-server-{k}", daemon=True)
                   for k in range(min(self.options.concurrency, total))]
        for t in threads:
            t.start()
        error: BaseException | None = None
        received = 0
        while received < total:
            try:
                i, text, exc = results.get(timeout=0.5)
            except queue.Empty:
                if error is not None and not any(t.is_alive() for t in threads) and results.empty():
                    break
                continue
            received += 1
            if exc is not None:
                if error is None:
                    error = exc
                    stop.set()
                continue
            yield i, text or ""
            if hook:
                hook("generate", received, total)
        if error is not None:
            raise error

    def answer(self, request: EngineRequest) -> str:
        """One request's text; a transcription clip the server finds too long is split in two."""
        body = request_body(request, self.served_model, self.options)
        try:
            payload = self.server.post(body, request.kind)
        except _TooLong as exc:
            halves = split_request(request)
            if halves is None:
                raise PlanError(too_long_message(request, self.server.shown_url, exc.message)) from None
            log.info("the server found a %.1f s clip too long (%s); sending it as two halves",
                     request.audio_seconds, exc.message[:120])
            return " ".join(t for t in (self.answer(h) for h in halves) if t)
        return answer_text(payload, self.options.api, thinking=request.settings.enable_thinking)


def too_long_message(request: EngineRequest, url: str, message: str) -> str:
    found = _LIMIT.search(message)
    limit = int(found.group(1)) if found else None
    size = f" of about {request.tokens:,} prompt tokens" if request.tokens else ""
    advice = (f"pass --context-tokens {limit} (the server's limit)" if limit
              else "pass a smaller --context-tokens (at most the server's context length)")
    if request.kind == "transcribe":
        advice = "lower --max-clip, or --keyframe-tokens"
    return (f"the model server at {url} rejected a {request.kind} request{size} as too long ({message[:200]}); "
            f"{advice} so the requests are planned smaller, or raise the server's limit (vLLM --max-model-len, "
            "llama.cpp -c, Ollama num_ctx)")


def split_request(request: EngineRequest) -> tuple[EngineRequest, EngineRequest] | None:
    """The request as two requests over the halves of its clip, cut at the quietest moment of the middle
    third (a pause, not a word); None when there is no clip, or it is too short to halve."""
    from .planner import PlanOptions, quietest_point

    clips = [p for p in request.parts if isinstance(p, AudioPart)]
    if request.kind != "transcribe" or len(clips) != 1 or clips[0].waveform is None \
            or clips[0].seconds < MIN_SPLIT_SECONDS:
        return None
    clip = clips[0]
    first, last = clip.sample_range()
    third = (last - first) // 3
    cut = quietest_point(clip.waveform, first, last - third,
                         PlanOptions(cut_search=max(0.01, third / SAMPLE_RATE)))
    cut = min(max(cut, first + third), last - third)
    middle = cut / SAMPLE_RATE

    def half(start: float, end: float) -> EngineRequest:
        part = AudioPart(start, end, clip.waveform, clip.source)
        parts = tuple(part if p is clip else p for p in request.parts)
        return replace(request, parts=parts, start=start, end=end, tokens=0)

    return half(clip.start, middle), half(middle, clip.end)


def _local_processor(model: str) -> Any:
    from .transformers_engine import load_processor

    try:
        return load_processor(model, local_only=True)
    except Exception as exc:  # noqa: BLE001 - without it the planner estimates; the server has its own
        log.debug("no local processor for %s (%s); notes token counts are estimates", model, exc)
        return None


def make_server_factory(options: ServerOptions):
    """model id -> engine, one engine per model, all sharing one server connection and its bound."""
    server = ModelServer(options)
    server.check_reachable()
    engines: dict[str, OpenAIEngine] = {}
    lock = threading.Lock()

    def factory(model: str) -> OpenAIEngine:
        with lock:
            if model not in engines:
                engines[model] = OpenAIEngine(model, options, server=server)
            return engines[model]

    factory.server = server  # type: ignore[attr-defined]
    return factory
