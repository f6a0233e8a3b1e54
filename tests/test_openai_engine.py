"""The model-server engine (`--engine openai`) against a real HTTP server on 127.0.0.1 that runs the tiny
random checkpoint (tests/openai_server.py): the same texts as the in-process engine for the same requests,
in every wire dialect; many requests in flight; retries; too-long requests; a server that is down or
refuses audio; the API key; answers kept as they finish; and the CLI's transcribe/summarize/batch."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, SAMPLES, ffmpeg, truth
from openai_server import TestModelServer

from mediapipe_g4.answers import CachedEngine
from mediapipe_g4.engine import EngineRequest, GenerationSettings, ImagePart, TextPart
from mediapipe_g4.errors import ModelError, PlanError
from mediapipe_g4.openai_engine import (
    OpenAIEngine,
    ServerOptions,
    endpoint,
    make_server_factory,
    redact_url,
    split_request,
    wav_bytes,
)
from mediapipe_g4.planner import PlanOptions, plan_transcription
from mediapipe_g4.records import SpeakerTurn

FAST = {"backoff": 0.01, "max_backoff": 0.05}  # retries without the production waits


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    srv = TestModelServer(tiny_checkpoint)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def srv(server):
    server.reset()
    yield server
    server.reset()


def engine(srv: TestModelServer, model: str = "tiny", **kw) -> OpenAIEngine:
    return OpenAIEngine(model, ServerOptions(**{"url": srv.url, **FAST, **kw}), processor=False)


def echo(req: dict) -> str:
    """A fake answer: the first text of the user turn, and what media came with it."""
    user = req["messages"][-1]["content"]
    text = next(p["text"] for p in user if p["type"] == "text")
    return f"{text}|audio={req['audio_seconds']:.2f}|images={req['images']}"


def text_request(text: str, kind: str = "names", max_new: int = 8) -> EngineRequest:
    return EngineRequest(kind=kind, parts=(TextPart(text),), settings=GenerationSettings(max_new_tokens=max_new))


@pytest.fixture(scope="module")
def call(tmp_path_factory):
    """Transcription requests planned on samples/phone_call.wav (short answers, so the model is quick)."""
    from mediapipe_g4 import media

    waveform = media.decode_audio(SAMPLES / "phone_call.wav", tmp_path_factory.mktemp("call"))
    turns = [SpeakerTurn(s["start"], s["end"], s["speaker"]) for s in truth("phone_call.wav")["segments"]]
    requests = plan_transcription(turns, waveform, (), PlanOptions(transcribe_max_new_tokens=10))
    return {"waveform": waveform, "requests": requests}


@pytest.fixture(scope="module")
def slide(tmp_path_factory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("slide") / "slide.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(path, quality=90)
    return path


# --------------------------------------------------------------------------- pure parts


def test_endpoints_wav_and_redaction():
    assert endpoint("http://h:8000/v1", "openai") == "http://h:8000/v1/chat/completions"
    assert endpoint("http://h:8000/", "vllm") == "http://h:8000/v1/chat/completions"
    assert endpoint("http://h:8000/v1/chat/completions", "openai") == "http://h:8000/v1/chat/completions"
    assert endpoint("http://h:11434/v1", "ollama") == "http://h:11434/api/chat"
    assert redact_url("https://user:key@h/v1") == "https://***@h/v1" and redact_url("http://h/v1") == "http://h/v1"
    assert redact_url("https://u:k@h/v1?token=abc&x=1") == "https://***@h/v1?token=***&x=***"
    import soundfile

    x = np.random.default_rng(1).uniform(-1, 1, 1600).astype(np.float32)
    got, rate = soundfile.read(__import__("io").BytesIO(wav_bytes(x)), dtype="float32")
    assert rate == 16000 and np.array_equal(got, x)  # float32 WAV: lossless
    got16, _ = soundfile.read(__import__("io").BytesIO(wav_bytes(x, float32=False)), dtype="float32")
    assert np.abs(got16 - x).max() <= 1 / 32768
    with pytest.raises(ModelError, match="http"):
        ServerOptions(url="localhost:8000")
    # What real servers answer: llama.cpp without its mmproj / with an unknown part, vLLM with a text model.
    from mediapipe_g4.openai_engine import _LIMIT, _TOO_LONG, _refuses_media

    audio = {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}
    for message in ("audio input is not supported - hint: if this is unexpected, you may need to provide the mmproj",
                    "unsupported content[].type", "At most 0 audio(s) may be provided in one prompt."):
        assert _refuses_media(message, audio) and not _TOO_LONG.search(message), message
    assert not _refuses_media("CUDA out of memory", audio)
    for message, limit in [("the request exceeds the available context size, try increasing it (n_ctx 4096)", "4096"),
                           ("This model's maximum context length is 32768 tokens. However, you requested", "32768"),
                           # vLLM's words for a prompt over --max-model-len (V0, then V1): the limit was not found
                           ("The decoder prompt (length 40000) is longer than the maximum model length of 32768. Make "
                            "sure that `max_model_len` is no smaller than the number of text tokens", "32768"),
                           ("The prompt (total length 40000) is too long to fit into the model (context length 16384). "
                            "Make sure that `max_model_len` is no smaller", "16384")]:
        assert _TOO_LONG.search(message) and _LIMIT.search(message).group(1) == limit
    with pytest.raises(ModelError, match="--server-api"):
        ServerOptions(url="http://h", api="tgi")


@pytest.mark.parametrize("api", ["openai", "vllm", "ollama"])
def test_sampled_requests_carry_their_seed(api):
    from mediapipe_g4.openai_engine import request_body

    options = ServerOptions(url="http://h/v1", api=api)
    sampled = EngineRequest("notes", (TextPart("notes"),), settings=GenerationSettings(greedy=False, seed=5))
    greedy = EngineRequest("names", (TextPart("names"),), settings=GenerationSettings(greedy=True, seed=5))
    where = (lambda body: body["options"]) if api == "ollama" else (lambda body: body)
    assert where(request_body(sampled, "m", options))["seed"] == 5
    assert "seed" not in where(request_body(greedy, "m", options))


# --------------------------------------------------------------------------- same texts as in-process


def test_same_texts_as_the_in_process_engine(srv, tiny_checkpoint, call, slide):
    from mediapipe_g4.transformers_engine import EngineOptions, TransformersEngine

    transcribe = list(call["requests"][:4])
    with_image = replace(transcribe[0], parts=(*transcribe[0].parts, ImagePart(str(slide))), image_tokens=140)
    system = replace(text_request("Speaker S1 said hello to S2 at 00:05.", kind="names", max_new=12),
                     system="Write meeting notes: summary, decisions.")
    requests = [*transcribe, with_image, system]
    local = TransformersEngine(EngineOptions(model=str(tiny_checkpoint), batch_size=1)).generate(requests)
    assert len(set(local)) > 1 and any(local)
    for api in ("openai", "vllm", "ollama"):
        # Ollama's API has no image size setting: compare it on the requests it can express.
        chosen = [r for r in requests if api != "ollama" or r is not with_image]
        expected = [t for r, t in zip(requests, local) if r in chosen]
        srv.seen.clear()
        texts = engine(srv, str(tiny_checkpoint), api=api, concurrency=3).generate(chosen)
        assert texts == expected, api
        assert [s["status"] for s in srv.seen] == [200] * len(chosen)
        assert sorted(s["audio_seconds"] for s in srv.seen) == pytest.approx(
            sorted(round(r.audio_seconds, 3) for r in chosen), abs=1e-3)
        assert sum(s["images"] for s in srv.seen) == (api != "ollama")


# --------------------------------------------------------------------------- concurrency


def test_concurrency_8_keeps_8_requests_in_flight(srv):
    srv.fake, srv.fake_delay = echo, 0.25
    eng = engine(srv, concurrency=8)
    requests = [text_request(f"req {i}") for i in range(24)]
    done: list[int] = []
    t0 = time.perf_counter()
    texts = eng.generate(requests, hook=lambda step, n, total: done.append(n))
    elapsed = time.perf_counter() - t0
    assert texts == [f"req {i}|audio=0.00|images=0" for i in range(24)]  # in the requests' order
    assert srv.max_in_flight == 8 and eng.server.max_in_flight == 8
    assert elapsed < 24 * 0.25 / 3, elapsed  # 3 waves of 8, not 24 one after another
    assert done[-1] == 24

    # Engines for two models on one server share its bound (batch: recordings at once).
    srv.max_in_flight = 0
    factory = make_server_factory(ServerOptions(url=srv.url, concurrency=4, **FAST))
    out: dict[str, list[str]] = {}
    threads = [threading.Thread(target=lambda m=m: out.__setitem__(m, factory(m).generate(requests[:10])))
               for m in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert srv.max_in_flight == 4 and out["a"] == out["b"] == texts[:10]


# --------------------------------------------------------------------------- faults


def test_retries_429_500_dropped_and_slow_answers(srv):
    srv.fake = echo
    srv.faults.extend([{"status": 429, "retry_after": 0.3}, {"status": 500}, {"drop": True}, {"delay": 1.5}])
    t0 = time.perf_counter()
    assert engine(srv, timeout=0.5).generate([text_request("hello")]) == ["hello|audio=0.00|images=0"]
    assert time.perf_counter() - t0 >= 0.3 + 0.5  # Retry-After honoured; the slow answer timed out
    statuses = [s["status"] for s in srv.seen]  # the 4th is still sleeping on the server, or answered late
    assert len(statuses) == 5 and statuses[:3] == [429, 500, "dropped"] and statuses[4] == 200

    srv.seen.clear()
    srv.faults.extend([{"status": 503}] * 5)
    with pytest.raises(ModelError, match=r"kept failing \(HTTP 503.*5 tries\); check the server's log, or lower "
                                         r"--concurrency$"):
        engine(srv).generate([text_request("hello")])


def test_a_server_still_loading_its_model_is_waited_for_and_long_waits_are_said(srv, caplog):
    """llama-server answers 503 "Loading model" for as long as the model loads (a minute for a 12B): started with it,
    g4media failed after 5 quick tries (7-15 s). And a timeout costs the whole --server-timeout (10 min) per try,
    which only -v said."""
    srv.fake = echo
    srv.faults.extend([{"status": 503, "message": "Loading model"}] * 8)  # more than max_tries
    with caplog.at_level("WARNING", logger="mediapipe_g4"):
        assert engine(srv, load_poll=0.01).generate([text_request("hello")]) == ["hello|audio=0.00|images=0"]
    assert caplog.text.count("is still loading its model; waiting for it") == 1
    srv.faults.clear()
    srv.faults.extend([{"status": 503, "message": "Loading model"}] * 40)
    with pytest.raises(ModelError, match=r"kept failing \(HTTP 503: Loading model; 5 tries\)"):
        engine(srv, load_poll=0.01, load_wait=0.1).generate([text_request("hello")])  # waited long enough
    srv.faults.clear()
    caplog.clear()
    srv.faults.append({"delay": 1.0})
    with caplog.at_level("WARNING", logger="mediapipe_g4"):
        assert engine(srv, timeout=0.3).generate([text_request("again")]) == ["again|audio=0.00|images=0"]
    assert "no answer within 0.3 s; asking once more" in caplog.text
    # A second timeout ends it: five tries of the whole --server-timeout were 50 minutes before this error.
    srv.seen.clear()
    srv.faults.extend([{"delay": 1.0}] * 3)
    with pytest.raises(ModelError, match=r"did not answer a names request within 0.3 s, 2 times; raise "
                                         r"--server-timeout or lower --concurrency$"):
        engine(srv, timeout=0.3).generate([text_request("slow")])
    assert len(srv.seen) <= 2  # asked twice (the second may still be sleeping on the server)
    srv.faults.clear()
    caplog.clear()
    srv.faults.extend([{"delay": 1.0}] * 2)
    with caplog.at_level("WARNING", logger="mediapipe_g4"):
        assert engine(srv, timeout=0.3, timeout_tries=3).generate([text_request("thrice")])
    assert "asking again (at most 2 more times)" in caplog.text and "asking once more" in caplog.text
    time.sleep(1.0)  # the server's two timed-out handlers finish their sleep before the process may end


def test_a_proxys_html_error_page_is_said_in_words():
    from mediapipe_g4.openai_engine import error_message

    class Page:
        text, reason = "<html><body><h1>502 Bad Gateway</h1><hr><center>nginx</center></body></html>", "Bad Gateway"

        def json(self):
            raise ValueError("not JSON")

    assert error_message(Page()) == "502 Bad Gateway nginx"


def test_too_long_transcription_is_split_in_two(srv, tiny_checkpoint, call):
    from mediapipe_g4.transformers_engine import EngineOptions, TransformersEngine

    request = max(call["requests"][:4], key=lambda r: r.audio_seconds)
    halves = split_request(request)
    assert halves and halves[0].end == halves[1].start and request.start == halves[0].start
    assert request.audio_seconds / 3 - 0.02 <= halves[0].audio_seconds <= 2 * request.audio_seconds / 3 + 0.02
    eng = engine(srv, str(tiny_checkpoint))
    whole = srv.inputs(srv.decode("/v1/chat/completions", _body(request, eng)))["input_ids"].shape[1]
    srv.max_context = whole + 10 - 20  # the clip is over the limit, each half under it
    text = eng.generate([request])[0]
    assert [s["status"] for s in srv.seen] == [400, 200, 200]
    local = TransformersEngine(EngineOptions(model=str(tiny_checkpoint), batch_size=1)).generate(list(halves))
    assert text == " ".join(t for t in local if t)


def test_too_long_notes_request_says_to_lower_context_tokens(srv):
    srv.max_context = 40
    with pytest.raises(PlanError, match=r"--context-tokens 40 \(the server's limit\)"):
        engine(srv).generate([text_request("Write meeting notes: " + "summary, decisions. " * 20, kind="notes")])


def test_ollama_is_told_not_to_cut_a_prompt_longer_than_its_context(srv):
    """Ollama answers a prompt longer than num_ctx by default, cut (its start and its end kept): notes missing the
    middle of the meeting. g4media asks it not to, so that too long is an error that says what to do."""
    srv.max_context = 40
    notes = text_request("Write meeting notes: " + "summary, decisions. " * 20, kind="notes")
    with pytest.raises(PlanError, match=r"--context-tokens"):
        engine(srv, api="ollama").generate([notes])
    assert [s["status"] for s in srv.seen] == [400] and not any(s.get("truncated") for s in srv.seen)
    srv.seen.clear()  # some Ollama versions say it with a 500: too long all the same, not retried
    srv.faults.append({"status": 500, "message": "the input length exceeds the context length"})
    with pytest.raises(PlanError, match=r"--context-tokens"):
        engine(srv, api="ollama").generate([notes])
    assert [s["status"] for s in srv.seen] == [500]


@pytest.mark.parametrize("api", ["openai", "vllm", "ollama"])
def test_every_request_says_whether_to_think(api):
    """llama-server thinks by default with Gemma 4's template (a thought would spend a transcription's tokens), so
    thinking off is said to every server, not only to vLLM."""
    from mediapipe_g4.openai_engine import request_body

    options = ServerOptions(url="http://h/v1", api=api)
    for thinking in (False, True):
        body = request_body(replace(text_request("names"), settings=GenerationSettings(enable_thinking=thinking)),
                            "m", options)
        said = body["think"] if api == "ollama" else body["chat_template_kwargs"]["enable_thinking"]
        assert said is thinking


def test_server_down_and_server_without_audio(srv, call, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    dead = OpenAIEngine("tiny", ServerOptions(url=f"http://127.0.0.1:{port}/v1", **FAST), processor=False)
    with pytest.raises(ModelError, match=rf"cannot reach the model server at http://127.0.0.1:{port}/v1: .*--server"):
        dead.generate([text_request("hi")])
    with pytest.raises(ModelError, match=rf"cannot reach the model server at http://127.0.0.1:{port}/v1: "):
        make_server_factory(ServerOptions(url=f"http://127.0.0.1:{port}/v1", **FAST))  # at once, before any work
    # Behind a proxy the requests go by the proxy, so the check at once must not go straight to the address.
    with monkeypatch.context() as m:
        m.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
        m.delenv("NO_PROXY", raising=False)
        m.delenv("no_proxy", raising=False)
        make_server_factory(ServerOptions(url=f"http://127.0.0.1:{port}/v1", **FAST))
    srv.refuse_audio = True
    with pytest.raises(ModelError, match=r"does not take audio.*--server-api vllm, --server-api ollama"):
        engine(srv).generate(list(call["requests"][:2]))


def test_api_key_from_the_named_environment_variable(srv, monkeypatch):
    srv.fake, srv.api_key = echo, "s3cret-key"
    with pytest.raises(ModelError, match="HTTP 401.*--api-key-env"):
        engine(srv).generate([text_request("hi")])
    monkeypatch.delenv("G4_TEST_KEY", raising=False)
    with pytest.raises(ModelError, match="G4_TEST_KEY is not set"):
        engine(srv, api_key_env="G4_TEST_KEY")
    for bad in ("s3cret key", "sécret€"):
        monkeypatch.setenv("G4_TEST_KEY", bad)
        with pytest.raises(ModelError, match="characters an HTTP header cannot carry") as err:
            engine(srv, api_key_env="G4_TEST_KEY")
        assert "cret" not in str(err.value)
    monkeypatch.setenv("G4_TEST_KEY", "s3cret-key\n")  # pasted with its newline
    eng = engine(srv, api_key_env="G4_TEST_KEY")
    assert eng.generate([text_request("hi")]) == ["hi|audio=0.00|images=0"]
    assert "s3cret" not in json.dumps(eng.options.to_dict())


def test_finished_answers_are_kept_when_the_server_fails(srv, tmp_path):
    srv.fake = echo
    srv.faults.extend([{}] * 5 + [{"status": 400, "message": "malformed request"}])
    requests = [text_request(f"req {i}") for i in range(10)]
    cached = CachedEngine(lambda: engine(srv, concurrency=1), tmp_path)
    with pytest.raises(ModelError, match=r"rejected a names request.*malformed.*; check --server-api \(openai now\) "
                                         r"and the server's log$"):
        cached.generate(requests)
    assert len(list(tmp_path.glob("*.json"))) == 5  # each answer was written as it came
    srv.seen.clear()
    again = CachedEngine(lambda: engine(srv, concurrency=4), tmp_path)
    assert again.generate(requests) == [f"req {i}|audio=0.00|images=0" for i in range(10)]
    assert again.reused == 5 and len(srv.seen) == 5


def _body(request: EngineRequest, eng: OpenAIEngine) -> dict:
    from mediapipe_g4.openai_engine import request_body

    return request_body(request, eng.served_model, eng.options)


# --------------------------------------------------------------------------- the CLI


def g4media(*args: str, cache: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "G4MEDIA_CACHE": str(cache), "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "mediapipe_g4", *args], capture_output=True, text=True,
                          check=False, timeout=300, env=env, stdin=subprocess.DEVNULL)


def test_cli_against_the_server_matches_in_process(srv, tiny_checkpoint, tmp_path):
    cache, model = tmp_path / "cache", str(tiny_checkpoint)
    srv.api_key = "s3cret-key"
    server_args = ["--server", srv.url, "--api-key-env", "G4_TEST_KEY", "--concurrency", "8"]
    key = {"G4_TEST_KEY": "s3cret-key"}
    common = ["--model", model, "--context-tokens", "8192", "--format", "json"]
    call = str(SAMPLES / "phone_call.wav")

    local = g4media("summarize", call, *common, "--batch-size", "1", "-o", str(tmp_path / "local"), cache=cache)
    assert local.returncode == 0, local.stderr
    remote = g4media("summarize", call, *common, *server_args, "-o", str(tmp_path / "remote"), cache=cache, env=key)
    assert remote.returncode == 0, remote.stderr
    a, b = (json.loads((tmp_path / d / "phone_call.json").read_text()) for d in ("local", "remote"))
    assert a["segments"] and a["segments"] == b["segments"] and a["speakers"] == b["speakers"]
    assert b["model"]["engine"] == "openai" and b["notes"]["status"] in ("ok", "failed")
    # Every greedy answer (transcription, names) the server gave is the in-process engine's answer; the
    # notes are sampled (the model card's settings), so only their presence is compared.
    folders = {p.parent.name: p.parent for p in cache.glob("recordings/*/answers/*/*.json")}
    assert len(folders) == 2
    first, second = folders.values()
    greedy = sorted(p.name for p in first.glob("*.json")
                    if json.loads(p.read_text())["kind"] in ("transcribe", "names"))
    assert len(greedy) >= 10 and {p.name for p in second.glob("*.json")} >= set(greedy)
    for name in greedy:
        assert json.loads((first / name).read_text()) == json.loads((second / name).read_text()), name
    assert {json.loads(p.read_text())["kind"] for p in second.glob("*.json")} >= {"notes", "names", "transcribe"}
    assert "s3cret" not in (tmp_path / "remote" / "phone_call.json").read_text()

    out = g4media("transcribe", call, *common, *server_args, "-o", str(tmp_path / "t"), cache=cache, env=key)
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "t" / "phone_call.json").read_text())["segments"] == a["segments"]

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SAMPLES / "phone_call.wav", folder / "call.wav")
    ffmpeg("-i", str(SAMPLES / "interview.mp3"), "-t", "12", str(folder / "interview.mp3"))  # short: a lean test
    srv.seen.clear()
    batch = g4media("batch", str(folder), "--transcribe-only", *common, *server_args, "-o", str(tmp_path / "b"),
                    cache=cache, env=key)
    assert batch.returncode == 0, batch.stdout + batch.stderr
    assert "2 done" in batch.stdout and json.loads((tmp_path / "b" / "call.json").read_text())["segments"] == a["segments"]
    # Two at once have no progress bars: the terminal said nothing until one was done; now it says what is under way.
    assert {"call.wav: working on it", "interview.mp3: working on it"} <= set(batch.stderr.splitlines())
    assert json.loads((tmp_path / "b" / "interview.json").read_text())["segments"]
    assert srv.seen and all(s["status"] == 200 for s in srv.seen)  # only the interview went to the server

    down = g4media("transcribe", call, "--model", model, "--server", "http://127.0.0.1:9/v1", "-o",
                   str(tmp_path / "x"), cache=tmp_path / "cache2")
    assert down.returncode == 1 and down.stderr.startswith("Error: cannot reach the model server at "), down.stderr
    assert "Traceback" not in down.stderr


def test_batch_runs_recordings_at_once_and_stops_on_a_model_error(tmp_path):
    from mediapipe_g4.batch import _concurrently, default_workers

    assert default_workers("transformers", 64) == 1 and default_workers("openai", 8) == 2
    files = []
    for name, content in [("a", b"1"), ("b", b"2"), ("c", b"3"), ("d", b"1"), ("e", b"5")]:
        files.append(tmp_path / name)
        files[-1].write_bytes(content)  # a and d: the same recording (one work folder)
    lock, running, peak, active = threading.Lock(), [0], [0], set()

    def one(path, broken):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            assert path.read_bytes() not in active  # never two runs on one work folder
            active.add(path.read_bytes())
        time.sleep(0.15)
        with lock:
            running[0] -= 1
            active.discard(path.read_bytes())
        return path.name

    got = list(_concurrently(iter((f, None) for f in files), one, 3))
    assert peak[0] == 3 and sorted(i for i, _, _ in got) == [0, 1, 2, 3, 4]
    assert {(i, name) for i, _, name in got} == {(i, f.name) for i, f in enumerate(files)}

    def failing(path, broken):
        if path.name == "b":
            raise ModelError("cannot reach the model server")
        time.sleep(0.1)
        return path.name

    with pytest.raises(ModelError, match="cannot reach"):
        list(_concurrently(iter((f, None) for f in files), failing, 2))


def test_in_process_options_with_a_server_are_named_as_ignored(srv, caplog):
    from mediapipe_g4.pipeline import RunOptions, make_engine_factory

    with caplog.at_level("WARNING", logger="mediapipe_g4"):
        make_engine_factory(RunOptions(engine="openai", server=srv.url,
                                       assistant="google/gemma-4-12B-it-assistant", quantize="4bit"))
    assert "--assistant, --quantize are the in-process engine's" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="mediapipe_g4"):
        make_engine_factory(RunOptions(engine="openai", server=srv.url))
    assert caplog.text == ""


def chat_completion(**message) -> dict:
    return {"id": "chatcmpl-test", "object": "chat.completion", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", **message}}]}


def test_an_answer_filed_as_reasoning_or_in_think_tags_is_the_answer(srv):
    # vLLM's and llama.cpp's reasoning parsers can put a whole answer in reasoning_content (content null) when they
    # see no end-of-thought marker; it was taken as an empty answer and kept in the work folder as one.
    srv.fake = echo
    srv.faults.extend([{"payload": chat_completion(content=None, reasoning_content="Hello Bob.")},
                       {"payload": chat_completion(content="", reasoning="Hello Ann.")},
                       {"payload": chat_completion(content="<think>who speaks?</think>\nHello Sue.")},
                       {"payload": chat_completion(content="who speaks?</think>Hello Tom.")},
                       {"payload": {"message": {"role": "assistant", "content": "", "thinking": "Hello Max."},
                                    "done": True}}])
    assert engine(srv, concurrency=1).generate([text_request(f"r{i}") for i in range(4)]) == [
        "Hello Bob.", "Hello Ann.", "Hello Sue.", "Hello Tom."]
    assert engine(srv, api="ollama").generate([text_request("r")]) == ["Hello Max."]


def test_a_url_with_a_key_in_its_query_reaches_the_endpoint_and_the_key_is_never_shown(srv):
    # The endpoint was built by appending to the whole URL: http://h/v1?api-key=K/v1/chat/completions, a 404 whose
    # message (the path, echoed) carried the key into the error line.
    assert endpoint("http://h:8000/v1/?api-key=K", "openai") == "http://h:8000/v1/chat/completions?api-key=K"
    assert endpoint("http://h:11434?api-key=K", "ollama") == "http://h:11434/api/chat?api-key=K"
    srv.fake = echo
    assert engine(srv, url=srv.url + "?api-key=s3cret-key").generate([text_request("hi")]) == ["hi|audio=0.00|images=0"]
    assert srv.seen[-1]["path"] == "/v1/chat/completions?api-key=s3cret-key"
    with pytest.raises(ModelError, match=r"HTTP 404: no route /v2/v1/chat/completions\?\*\*\*\)") as err:
        engine(srv, url=srv.url.replace("/v1", "/v2") + "?api-key=s3cret-key").generate([text_request("hi")])
    assert "s3cret" not in str(err.value)


def test_https_to_an_http_server_and_a_server_that_closes_connections_are_said_as_such(srv):
    # https:// to a plain-HTTP server was retried 5 times as a dropped connection, then said as "cannot reach
    # ...: HTTPSConnectionPool(host=...(Caused by SSLError(SSLError(1, '[SSL: WRONG_VERSION_NUMB; start it".
    eng = engine(srv, url=srv.url.replace("http://", "https://"))
    with pytest.raises(ModelError, match=r"^the model server at https://127.0.0.1:\d+/v1 does not speak https "
                                         r"\(\[SSL.*\); give --server as http://...$"):
        eng.generate([text_request("hi")])
    assert eng.server.tries == 1
    # A server that takes each connection and closes it was "cannot reach ...; start it": it is running.
    srv.faults.extend([{"drop": True}] * 5)
    with pytest.raises(ModelError, match=r"kept closing the connection without an answer \(Connection aborted.*; "
                                         r"5 tries\); check the server's log; if it serves https, give --server as "
                                         r"https://...$"):
        engine(srv).generate([text_request("hi")])


def test_an_unknown_model_names_how_to_list_the_servers_models(srv):
    srv.faults.append({"status": 404, "message": "The model `tiny` does not exist."})  # vLLM
    with pytest.raises(ModelError, match=r"no model 'tiny' .*HTTP 404: The model `tiny` does not exist.*"
                                         r"--served-model with the name it serves \(GET /v1/models lists them\)"):
        engine(srv).generate([text_request("hi")])
    # Ollama's native API has no /v1/models: it said to GET /v1/models all the same.
    srv.faults.append({"status": 404, "message": 'model "gemma4:12b" not found, try pulling it first'})
    with pytest.raises(ModelError, match=r"\(`ollama list` names them, or `ollama pull` it\)"):
        engine(srv, "gemma4:12b", api="ollama").generate([text_request("hi")])


def test_image_sizes_only_vllm_takes_are_planned_as_the_server_makes_them(caplog):
    """--image-tokens 70 reaches vLLM with each request; llama.cpp and Ollama make each image 280 tokens whatever
    the request says, so planning 70 would under-count the notes prompt four times over."""
    from mediapipe_g4.cli import _server_plan

    asked = PlanOptions(notes_image_tokens=70, keyframe_tokens=140)
    assert _server_plan(asked, "vllm").notes_image_tokens == 70 and "vLLM" not in caplog.text
    for api in ("openai", "ollama"):
        caplog.clear()
        with caplog.at_level("WARNING", logger="mediapipe_g4"):
            plan = _server_plan(asked, api)
        assert (plan.notes_image_tokens, plan.keyframe_tokens, plan.context_tokens) == (280, 280, 32768)
        assert "--image-tokens 70, --keyframe-tokens 140: only vLLM" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="mediapipe_g4"):
        assert _server_plan(PlanOptions(), "ollama").keyframe_tokens == 0 and not caplog.text
