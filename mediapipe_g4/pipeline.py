"""One recording, end to end: media -> speaker turns -> plan -> transcript -> names -> notes -> result.

Each stage's finished result sits in the recording's work folder (audio, keyframes, turns, every model
answer), so a run killed at any moment resumes where it stopped, and a repeated run costs almost
nothing: the model is not even loaded when every answer is on disk.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, media, video
from .answers import CachedEngine
from .atomic import write_json
from .diarize import DiarizationOptions
from .engine import Engine, EngineRequest, GenerationSettings, TextPart
from .errors import G4Error, MediaError, PlanError
from .memory import pick_device
from .names import build_speakers, names_prompt, parse_names, resolve_side_names, transcript_lines
from .notes_schema import NotesCutOff, NotesParseError, ground_notes, parse_notes
from .planner import (
    Plan,
    PlanOptions,
    build_timeline,
    make_plan,
    plan_merge,
    plan_notes,
)
from .progress import Hook, null_hook
from .prompts import language_line
from .records import SAMPLE_RATE, STAGES, Diarization, Keyframe, MediaInfo, Segment, clock
from .sides import find_speakers
from .token_count import TokenCounter
from .transcript import segments_from_answers
from .transformers_engine import DEFAULT_MODEL, load_processor
from .workdir import code_key, file_sha256, media_work_dir, room_for_work, settings_key

if TYPE_CHECKING:
    from .openai_engine import ServerOptions

log = logging.getLogger("mediapipe_g4")

EngineFactory = Callable[[str], Engine]  # model id -> engine

NOTES_REPAIR_PROMPT = (
    "The text below was meant to be meeting notes as one JSON object with the keys \"summary\" (string), "
    "\"decisions\" (list of strings), \"action_items\" (list of {{\"text\", \"owner\", \"due\", \"time\"}}), "
    "\"chapters\" (list of {{\"start\", \"title\"}}) and \"questions\" (list of strings), but it is not valid: "
    "{error}.\nRewrite it as that JSON object, keeping its content{shorter}. {language}Output only the JSON.\n\n"
    "{answer}"
)
# Said when the notes ran out of tokens: the rewrite must be shorter to fit, and it starts from their beginning.
NOTES_SHORTER = ", but shorter, so that all of it fits: at most {words} words in all"
REPAIR_CHARS = 12_000  # of the invalid answer, into the repair prompt


@dataclass(frozen=True)
class RunOptions:
    """Everything that shapes a run; echoed into the result so a report says how it was made."""

    model: str = DEFAULT_MODEL  # writes the notes and names speakers (and transcribes, unless below)
    transcribe_model: str | None = None  # a separate model for transcription (e.g. google/gemma-4-E4B-it)
    engine: str = "transformers"
    device: str | None = None
    dtype: str | None = None
    quantize: str | None = None
    assistant: str | None = None
    batch_size: int | None = None  # None: from the plan's memory estimate
    compile: bool | None = None  # static cache + torch.compile decoding; None: on CUDA GPUs
    audio_track: int | str | None = None  # N (1-based), "all" (mixed), None: the first (said when there are more)
    plan: PlanOptions = PlanOptions()
    diarization: DiarizationOptions = DiarizationOptions()
    names: tuple[tuple[str, str], ...] = ()  # --names overrides, (id, name)
    summarize: bool = True  # names and notes after the transcript
    slides: bool = True  # find the keyframes (the notes, the reports and X.json show them; subtitles do not)
    cache_dir: str | None = None
    fresh: bool = False
    # --engine openai: the model runs on a server (docs/SERVING.md)
    server: str | None = None  # its URL, e.g. http://localhost:8000/v1
    server_api: str = "openai"  # openai | vllm | ollama: how media go over the wire
    api_key_env: str | None = None  # the name of the environment variable with the key (never the key)
    concurrency: int = 8  # requests in flight at the server
    served_model: str | None = None  # the model's name on the server (default: --model)
    server_timeout: float = 600.0  # seconds to wait for one answer

    @property
    def asr_model(self) -> str:
        return self.transcribe_model or self.model

    def to_dict(self) -> dict[str, Any]:
        from .openai_engine import redact_url

        out = dataclasses.asdict(self)
        out["names"] = dict(self.names)
        out.pop("cache_dir")
        if self.server:
            out["server"] = redact_url(self.server)
        return out

    def outcome(self) -> dict[str, Any]:
        """The part of `to_dict()` that shapes the outputs (the models, the audio, what is asked of them), not
        where or how fast they run."""
        return {k: v for k, v in json.loads(json.dumps(self.to_dict())).items() if k not in _RUNTIME_ONLY}

    def changed_from(self, made: dict[str, Any]) -> list[str]:
        """The settings of `outcome()` (dotted names) that differ from `made`, an X.json's `options`: a batch
        redoes such a recording. A setting newer than the X.json counts as changed only when it is not at its
        default; inside a group (`names`, `diarization`), one that only the X.json has counts."""
        return _changed(made, self.outcome(), RunOptions().outcome())


# Settings of how and where the model runs, not of what it is asked or which model answers (`served_model`, the
# model's name on a server, does count: another name there is another model).
_RUNTIME_ONLY = ("engine", "device", "assistant", "batch_size", "compile", "fresh", "server", "server_api",
                 "api_key_env", "concurrency", "server_timeout")


def _changed(made: dict[str, Any], wanted: dict[str, Any], default: dict[str, Any], prefix: str = "") -> list[str]:
    out = [prefix + key for key in made if prefix and key not in wanted]
    for key, value in wanted.items():
        if key not in made:
            if value != default.get(key):
                out.append(prefix + key)
        elif isinstance(value, dict) and isinstance(made[key], dict):
            below = default.get(key)
            out += _changed(made[key], value, below if isinstance(below, dict) else {}, f"{prefix}{key}.")
        elif made[key] != value:
            out.append(prefix + key)
    return out


@dataclass
class Timer:
    """Seconds per stage; stages may overlap (keyframes run beside decoding, diarization and transcription), so
    the total is the wall time since the timer was made, not their sum."""

    seconds: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def run(self, stage: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            self.seconds[stage] = round(self.seconds.get(stage, 0.0) + time.perf_counter() - t0, 3)

    def stop(self) -> None:
        self.seconds["total"] = round(time.perf_counter() - self.started, 3)
        self.seconds = {k: self.seconds[k] for k in sorted(self.seconds, key=STAGES.index)}


class Cancelled(Exception):
    """Raised inside background work whose result is no longer wanted."""


class Background:
    """`fn(hook)` in a daemon thread, beside the caller's own work: `result()` waits for it and returns its
    value or raises its exception; `cancel()` stops it at its next progress call (FFmpeg is then killed by
    the frame reader's cleanup), so a failed run leaves nothing working behind it."""

    def __init__(self, fn: Callable[[Hook], Any], hook: Hook, name: str):
        self._stop = threading.Event()
        self._box: dict[str, Any] = {}

        def checked_hook(step: str, completed: int, total: int) -> None:
            if self._stop.is_set():
                raise Cancelled(name)
            hook(step, completed, total)

        def work() -> None:
            try:
                self._box["value"] = fn(checked_hook)
            except BaseException as exc:  # noqa: BLE001 - handed to whoever asks for the result
                self._box["error"] = exc

        self._thread = threading.Thread(target=work, name=f"g4-{name}", daemon=True)
        self._thread.start()

    def result(self) -> Any:
        self._thread.join()
        if "error" in self._box:
            raise self._box["error"]
        return self._box["value"]

    def cancel(self) -> None:
        self._stop.set()

    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self) -> None:
        """Until it has ended, however it ended."""
        self._thread.join()


# --------------------------------------------------------------------------- stages


# The code and packages that find speaker turns: a release that changes them finds the turns again. The decoding's
# is among them (the audio the diarizer hears: a channel the decoder dropped, or the length it stopped at, were
# found anew only with a fresh work folder).
TURNS_CODE = ("diarize", "vad", "sides", "media", "pkg:resemblyzer", "pkg:silero-vad")


def _turns_prefix() -> str:
    return f"turns-{code_key(*TURNS_CODE)}-"


def turns_path(work: Path, options: DiarizationOptions) -> Path:
    """`turns-<code>-<settings>.json`: one file per setting (`--speakers 2` and `3` are both kept), the code's key
    first, so that the files of other versions are told apart (and removed)."""
    return work / f"{_turns_prefix()}{settings_key(options.to_dict())}.json"


def cached_diarization(work: Path, options: DiarizationOptions) -> Diarization | None:
    """The speaker turns found before with these settings, if any (a damaged file: none, and they are found again)."""
    path = turns_path(work, options)
    try:
        return Diarization.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("ignoring the damaged speaker turns %s in the work folder (%s); finding them again", path.name,
                    exc)
        return None


def load_diarization(waveform, work: Path, options: DiarizationOptions, hook: Hook, cached: Diarization | None,
                     open_sides: Callable[[], list[Any]] | None = None) -> Diarization:
    """Speaker turns over the whole recording: `cached` (those found before with these settings,
    `cached_diarization`), or found now and kept in the work folder. With `open_sides` (the recording's sides,
    `media.decode_sides`), side by side when the sides carry their own voices (`sides.py`; always with
    `options.sides` "split"): `sides.find_speakers`."""
    if cached is not None and abs(cached.duration - len(waveform) / SAMPLE_RATE) > 1.0:
        log.info("the speaker turns in the work folder are of %.1f s of audio, not of the %.1f s decoded now: "
                 "finding them again", cached.duration, len(waveform) / SAMPLE_RATE)
        cached = None
    if cached is None:
        result = find_speakers(waveform, options, open_sides, hook)
        write_json(turns_path(work, options), result.to_dict())
        for old in work.glob("turns-*.json"):  # found by another version of the code: never read again
            if not old.name.startswith(_turns_prefix()):
                old.unlink(missing_ok=True)
    else:
        result = cached
    if options.num_speakers and len(result.speakers) < options.num_speakers and not result.sides:  # (sides: said)
        log.warning("--speakers %d: this recording's speech was told apart into only %d (each voice needs a few "
                    "seconds of speech)", options.num_speakers, len(result.speakers))
    return result


def answer_folder(work: Path, model: str, options: RunOptions) -> Path:
    """Answers depend on the model and how it runs (its numerics), besides the prompt itself."""
    run = {"model": model, "engine": options.engine, "dtype": options.dtype, "quantize": options.quantize}
    if options.engine != "transformers":  # a served model is known by the server's name and dialect
        run.update(server_api=options.server_api, served_model=options.served_model)
    key = settings_key(run)
    return work / "answers" / key


NAMES_MAX_NEW_TOKENS = 400


def fitted(request_of: Callable[[int], EngineRequest], chars: int, length: int, budget: int, counter: TokenCounter
           ) -> EngineRequest:
    """`request_of(chars)`, with a text of `length` characters cut to `chars`, made to fit `budget` tokens (prompt
    and answer): counted in tokens, and cut again until it fits (or is down to a few hundred characters). A guess of
    three characters a token held for English, but a Chinese transcript's came to about three times the budget; a
    cut no shorter than the text itself cut nothing, and the request went out too long."""
    chars = min(chars, length)
    while True:
        request = request_of(chars)
        room = budget - request.settings.max_new_tokens
        used = counter.count(request)
        if used <= room or chars <= 200:
            return request
        chars = min(chars - 1, int(chars * max(room, 1) / used * 0.95))


def name_speakers(engine: Engine, segments: Sequence[Segment], budget: int, counter: TokenCounter,
                  vocabulary: tuple[str, ...] = (), hook: Hook | None = None) -> dict[str, dict[str, Any]]:
    """Speaker names with evidence, from one request of at most `budget` tokens (prompt and answer)."""
    if not segments:
        return {}

    def request_of(chars: int) -> EngineRequest:
        return EngineRequest(kind="names", parts=(TextPart(names_prompt(segments, max_chars=chars,
                                                                        vocabulary=vocabulary)),),
                             start=segments[0].start, end=segments[-1].end,
                             settings=GenerationSettings(max_new_tokens=NAMES_MAX_NEW_TOKENS, greedy=True))

    lines = sum(len(line) + 1 for line in transcript_lines(segments))
    request = fitted(request_of, max(budget - NAMES_MAX_NEW_TOKENS, 1) * 3, lines, budget, counter)
    (answer,) = engine.generate([request], hook=hook)  # one long request on a CPU: the display says it is under way
    return parse_names(answer, segments)


def notes_not_made(status: str, error: str) -> dict[str, Any]:
    """Notes that were skipped or failed, with the reason: the keys of notes that were made, empty (a script that
    reads `notes["decisions"]` needs no special case), and `status` to tell them from a meeting without any."""
    return {"status": status, "error": error, "summary": "", "decisions": [], "action_items": [], "chapters": [],
            "questions": []}


def write_notes(
    engine: Engine,
    segments: Sequence[Segment],
    keyframes: Sequence[Keyframe],
    speakers: dict[str, str],
    plan: Plan,
    counter: TokenCounter,
    hook: Hook,
) -> dict[str, Any]:
    """Notes from the timeline (sections, then the whole, when it does not fit), validated and grounded.

    An invalid answer gets one repair request; if that fails too, the notes say why they are missing.
    """
    if not segments:
        return notes_not_made("skipped", "no speech was transcribed, so there is nothing to take notes of")
    named = [replace(s, speaker=speakers.get(s.speaker, s.speaker)) for s in segments]
    timeline = build_timeline(named, keyframes)
    budget, options = plan.context_budget, plan.options
    requests = plan_notes(timeline, budget, options, counter)
    if len(requests) == 1:
        answer = engine.generate(requests, hook=hook)[0]
    else:
        sections = [r for r in requests if r.kind == "notes_section"]
        texts = engine.generate(sections, hook=hook)
        summaries = [(r.start, r.end, t) for r, t in zip(sections, texts, strict=True)]
        while True:
            empty = [f"{clock(a)}-{clock(b)}" for a, b, t in summaries if not t.strip()]
            if len(empty) == len(summaries):  # notes "ok" over nothing would be made up
                return notes_not_made("failed", "the model's summaries of the meeting's parts all came back empty "
                                                f"({len(summaries)} of them)")
            if empty:
                log.warning("the model's summaries of %d of the meeting's %d parts were empty (%s): the notes "
                            "leave those parts out", len(empty), len(summaries), ", ".join(empty))
            merges = plan_merge(summaries, budget, options, counter)
            texts = engine.generate(list(merges), hook=hook)
            if len(merges) == 1 and merges[0].kind == "notes":
                answer = texts[0]
                break
            summaries = [(r.start, r.end, t) for r, t in zip(merges, texts, strict=True)]
    try:
        notes = parse_notes(answer)
    except NotesParseError as first:
        log.info("notes answer invalid (%s); asking once for a repair", first)
        cut_off = isinstance(first, NotesCutOff)  # its beginning is what to keep; else its end holds the JSON
        shorter = NOTES_SHORTER.format(words=int(options.notes_max_new_tokens * 0.4)) if cut_off else ""
        # The notes' language again: a rewrite, shorter above all, may drift back to the prompt's English.
        language = f"{language_line(options.notes_language)} " if options.notes_language else ""
        why = str(first)

        def repair_of(chars: int) -> EngineRequest:  # as much of the answer as leaves room for the rewrite
            shown = answer[:chars] if cut_off else answer[-chars:]
            return EngineRequest(
                kind="notes_repair",
                parts=(TextPart(NOTES_REPAIR_PROMPT.format(error=why, answer=shown, shorter=shorter,
                                                           language=language)),),
                settings=GenerationSettings(max_new_tokens=options.notes_max_new_tokens, greedy=True),
            )

        repair = fitted(repair_of, min(REPAIR_CHARS, max(1000, (budget - options.notes_max_new_tokens - 400) * 3)),
                        len(answer), budget, counter)
        try:
            notes = parse_notes(engine.generate([repair])[0])
        except NotesParseError as second:
            return notes_not_made("failed", f"the model's notes could not be read, twice ({second})")
    return {"status": "ok", "error": None, **ground_notes(notes, segments, speakers)}


# --------------------------------------------------------------------------- the whole run


def _failure(exc: BaseException) -> str:
    """What failed, said: our own error's words, else its type too (a CUDA error, a bug)."""
    return str(exc) if isinstance(exc, G4Error) else f"{type(exc).__name__}: {exc}"


def load_early(make_engine: EngineFactory, options: RunOptions) -> None:
    """Load the transcription model on a CUDA GPU in a background thread while FFmpeg and diarization
    run: loading is disk and PCIe work, they are CPU work. The factory loads each model once, so the
    pipeline's own call waits for this load; a failure is the factory's to raise there."""
    if not getattr(make_engine, "loads_in_process", False) or not pick_device(options.device).startswith("cuda"):
        return
    Background(lambda _: make_engine(options.asr_model), null_hook, "load-model")  # its result is not asked for


@dataclass(frozen=True)
class Prepared:
    """A recording's CPU stages: what the model stages start from. `prepare_recording` makes it, in a thread
    while the model works on the recording before (`Lookahead`), or as the first step of a run. The audio and
    the speaker turns are done; the keyframes may still be being found (`slides`): transcription does not need
    them unless a keyframe goes beside each clip, so they go on beside it."""

    src: Path
    sha256: str
    work: Path
    info: MediaInfo
    waveform: Any  # the 16 kHz mono waveform, memory-mapped from the work folder
    slides: Background  # -> (keyframes, seconds it took, None if not looked for); `keyframes()` waits for them
    diarization: Diarization
    seconds: dict[str, float]  # the stages' own times (the keyframes' come with `slides`)
    wall: float  # their wall time
    short: str | None = None  # less audio decoded than the file states (media.warn_if_cut_off), said to the user
    sides: tuple[Any, ...] = ()  # each side's own waveform, when the speakers were found side by side (sides.py)

    def sources(self) -> dict[str, tuple[str, Any]]:
        """speaker -> (name, waveform) of their own side, for the planner (empty: everyone from `waveform`)."""
        return {spk: (f"side{n}", self.sides[n - 1]) for spk, n in self.diarization.sides.items() if self.sides}

    def keyframes(self) -> list[Keyframe]:
        """The keyframes, once found (an error in finding them is raised here)."""
        return self.slides.result()[0]


def prepare_recording(
    path: str | Path, options: RunOptions, make_engine: EngineFactory | None = None, *, hook: Hook = null_hook
) -> Prepared:
    """Hash, probe, decode, keyframes and speaker turns of one recording (each cached in its work folder).
    With `make_engine`, a first run starts loading the model meanwhile (`load_early`)."""
    with room_for_work(options.cache_dir):
        return _prepare(path, options, make_engine, hook)


def _prepare(path: str | Path, options: RunOptions, make_engine: EngineFactory | None, hook: Hook) -> Prepared:
    src = media.check_input_file(path)
    timer = Timer()
    sha = timer.run("hash", lambda: file_sha256(src))
    info = timer.run("probe", lambda: media.probe(src))
    if not info.has_audio:
        raise MediaError(f"{src} has no audio track, so there is no speech to transcribe; "
                         "`g4media probe` shows its streams")
    track = options.audio_track
    work = media_work_dir(sha, options.cache_dir, media.audio_variant(info, track))
    if track is None and len(info.audio_streams) > 1:
        log.warning("%s has %d audio tracks (%s); using the first: --audio-track N takes another, "
                    "--audio-track all takes them all", src.name, len(info.audio_streams), media.describe_tracks(info))
    before = None if options.fresh else cached_diarization(work, options.diarization)
    if before is not None:
        log.info("%s: speaker turns from the work folder %s", src.name, work)
    if make_engine is not None and before is None:
        load_early(make_engine, options)  # a first run: the model will be needed
    # Keyframes need only the video and FFmpeg's own threads: they run beside audio decoding and diarization,
    # and on beside transcription.
    def find_slides(h: Hook) -> tuple[list[Keyframe], float | None]:
        if not options.slides:
            return [], None
        t0 = time.perf_counter()
        return (video.extract_keyframes(src, work, info=info, hook=h, fresh=options.fresh),
                round(time.perf_counter() - t0, 3))

    slides = Background(find_slides, hook, "keyframes")

    def open_sides() -> list[Any]:  # decoded once: the speaker turns and the transcription both read them
        return media.decode_sides(src, work, info=info, hook=hook, track=track)

    split = options.diarization.sides
    may_split = split == "split" or (split == "auto" and media.side_count(info, track) > 1)
    try:
        if may_split and (before is None or before.sides):  # one FFmpeg pass gives the sides and the mix
            timer.run("decode", open_sides)
        waveform = timer.run("decode", lambda: media.decode_audio(src, work, info=info, hook=hook, track=track))
        diarization = timer.run("diarize", lambda: load_diarization(
            waveform, work, options.diarization, hook, before, open_sides if may_split else None))
        sides = tuple(timer.run("decode", open_sides)) if diarization.sides else ()
        if may_split and not sides:  # judged and found mixed: only the mix is read from here on
            media.release_audio(work, sides_only=True)
    except BaseException:
        slides.cancel()
        raise
    if track is None and len(info.audio_streams) > 1 and not diarization.turns:
        # OBS and screen recorders put the desktop's sound on track 1 and the microphone on track 2
        log.warning("%s: no speech was found on its first audio track; if the speech is on another, run again with "
                    "--audio-track 2 (or --audio-track all)", src.name)
    if sides and split == "auto":
        log.warning("%s: each %s holds its own side of the conversation, so speakers are found side by side "
                    "(--no-split-channels mixes them)", src.name, "track" if len(info.audio_streams) > 1
                    and track == "all" else "channel")
    return Prepared(src, sha, work, info, waveform, slides, diarization, dict(timer.seconds),
                    time.perf_counter() - timer.started, media.warn_if_cut_off(src.name, info, waveform, track),
                    sides)


class Lookahead:
    """Prepares the next recording in a thread while the model works on this one, so its FFmpeg and speaker
    turns (CPU) overlap the model (GPU); the model stays on the caller's thread. The next one starts only once
    this one is prepared and its keyframes found, so two preparations never share a work folder (copies of one
    recording would). A preparation that failed is done again in its turn, where its error is reported as
    usual."""

    def __init__(self, options: RunOptions, make_engine: EngineFactory):
        self.options, self.make_engine = options, make_engine
        self._next: Path | None = None
        self._jobs: dict[Path, Background] = {}

    def queue(self, path: str | Path) -> None:
        """`path` comes next: it starts preparing as soon as the recording in hand is prepared."""
        self._next = Path(path)

    def prepare(self, path: str | Path, hook: Hook = null_hook) -> Prepared:
        """`path`'s CPU stages, prepared ahead or now (reporting to `hook`); then the queued one starts."""
        key = Path(path)
        ready: Prepared | None = None
        try:
            job = self._jobs.pop(key, None)
            if job is not None:
                if job.running():
                    log.info("%s: waiting for its audio and speaker turns (prepared ahead)", key.name)
                try:
                    ready = job.result()
                except Exception as exc:  # noqa: BLE001 - prepared again below, which reports the error
                    log.debug("preparing %s ahead failed: %s", key, exc)
            ready = ready or prepare_recording(key, self.options, self.make_engine, hook=hook)
            return ready
        finally:
            following, self._next = self._next, None
            if following is not None and following != key and following not in self._jobs:
                # This one's keyframes may still be being found; two copies of one recording would share a work
                # folder, so the next one starts after them.
                before = ready.slides if ready is not None else None

                def prepare_next(h: Hook) -> Prepared:
                    if before is not None:
                        before.wait()
                    return prepare_recording(following, self.options, self.make_engine, hook=h)

                self._jobs[following] = Background(prepare_next, null_hook, "prepare")


def prepares_ahead(options: RunOptions) -> bool:
    """Whether several recordings gain from a Lookahead: with the model in this process on a GPU, whose
    stages leave the CPU idle (on a CPU the model needs every core; a server has its own batching)."""
    return options.engine == "transformers" and pick_device(options.device).startswith("cuda")


def process_recording(
    path: str | Path,
    options: RunOptions,
    make_engine: EngineFactory,
    *,
    hook: Hook = null_hook,
    prepared: Prepared | None = None,
) -> dict[str, Any]:
    """The result dict (the X.json schema) for one recording; `prepared`: its CPU stages, if already done."""
    prepared = prepared or prepare_recording(path, options, make_engine, hook=hook)
    try:
        with room_for_work(options.cache_dir):
            result = _model_stages(prepared, options, make_engine, hook)
    finally:
        prepared.slides.cancel()  # nothing once they are found; after an error, stops FFmpeg at its next frame
    # The speaker turns, keyframes and answers stay for reruns; the decoded audio (230 MB an hour) decodes again
    # in seconds, and kept for every recording it would fill a disk in a batch of long meetings.
    media.release_audio(prepared.work)
    return result


def _model_stages(prepared: Prepared, options: RunOptions, make_engine: EngineFactory, hook: Hook) -> dict[str, Any]:
    src, sha, work, info = prepared.src, prepared.sha256, prepared.work, prepared.info
    waveform, diarization = prepared.waveform, prepared.diarization
    timer = Timer(dict(prepared.seconds), started=time.perf_counter() - prepared.wall)

    def slides() -> list[Keyframe]:
        found, seconds = prepared.slides.result()
        if seconds is not None:
            timer.seconds["keyframes"] = seconds
        return found

    # Transcription needs the keyframes only to put one beside each clip; otherwise they are found meanwhile, and
    # beside the names too (the plan's notes requests, re-planned from the transcript, then leave the slides out).
    beside = slides() if options.plan.keyframe_tokens else []
    plan = timer.run("plan", lambda: make_plan(
        waveform, diarization.turns, beside, model=options.asr_model, options=options.plan,
        device=options.device, dtype=options.dtype, quantize=options.quantize, sources=prepared.sources(),
        notes=options.summarize, notes_model=options.model))
    for warning in plan.warnings:
        log.info("plan: %s", warning)

    engines: dict[str, Engine] = {}

    def engine_for(model: str) -> CachedEngine:
        def make() -> Engine:
            if model not in engines:
                engines[model] = make_engine(model)
            return engines[model]

        return CachedEngine(make, answer_folder(work, model, options), fresh=options.fresh,
                            chunk_size=options.batch_size or plan.memory.get("transcription_batch") or 8)

    asr = engine_for(options.asr_model)
    transcribe = [r for r in plan.requests if r.kind == "transcribe"]
    answers = timer.run("transcribe", lambda: asr.generate(transcribe, hook=hook))
    segments = segments_from_answers(transcribe, answers, translate_to=options.plan.translate_to)
    if len(transcribe) >= 3 and not any(a.strip() for a in answers):
        log.warning("%s: every one of the %d clips of speech came back empty from the model, so the transcript is "
                    "empty%s; the answers are kept in the work folder: once that is mended, run again with --fresh",
                    src.name, len(transcribe),
                    " (a model server may put its answer in reasoning_content instead of the message's content)"
                    if options.engine == "openai" else "")

    overrides, problems = resolve_side_names(dict(options.names), diarization.sides, diarization.speakers)
    for problem in problems:
        log.warning("%s: %s", src.name, problem)
    found: dict[str, dict[str, Any]] = {}
    notes = notes_not_made("skipped", "notes were not asked for (g4media transcribe)")
    generated = asr.generated
    if options.summarize:
        llm = asr if options.model == options.asr_model else engine_for(options.model)
        # Notes requests fill the context budget: as many at once as memory holds for them, not the batch sized for
        # 30 s clips (a long meeting's sections went to the model 4, or on a GPU up to 64, at a time).
        llm.chunk_size = plan.memory.get("notes_batch") or 1
        unnamed = [sid for sid in diarization.speakers if sid not in overrides]
        # A model (or server) that fails here costs the names and notes, not the finished transcript (and a batch
        # tries them again); a naming request a server finds too long costs the names alone.
        try:
            counter = notes_counter(plan, options)
            if unnamed and segments:
                try:
                    found = timer.run("names", lambda: name_speakers(llm, segments, plan.context_budget, counter,
                                                                     vocabulary=options.plan.vocabulary, hook=hook))
                except PlanError as exc:
                    log.warning("%s: no speaker names: %s", src.name, exc)
            speakers_now = {s.id: s.name for s in build_speakers(segments, found, overrides, diarization.speakers)}
            keyframes = slides()  # the names did not need them either
            notes = timer.run("notes", lambda: write_notes(llm, segments, keyframes, speakers_now, plan, counter,
                                                           hook))
        except PlanError as exc:  # the notes do not fit the budget (or a server found a request too long)
            log.warning("%s: no notes: %s", src.name, exc)
            notes = notes_not_made("failed", f"the notes could not be made: {exc}")
        except Exception as exc:  # noqa: BLE001 - a model (or server) that fails costs the notes, not the transcript
            log.warning("%s: no notes, the model failed: %s", src.name, _failure(exc),
                        exc_info=not isinstance(exc, G4Error) and log.isEnabledFor(logging.DEBUG))
            notes = notes_not_made("failed", f"the model failed: {_failure(exc)}")
        generated += llm.generated if llm is not asr else 0
    keyframes = slides()  # for the result (and with `transcribe` alone)
    speakers = build_speakers(segments, found, overrides, diarization.speakers)
    timer.stop()
    return {
        "source": {"path": str(src.resolve()), "name": src.name, "sha256": sha,
                   # a length FFmpeg only estimated from the bitrate, or none (a browser's WebM recording states
                   # none): the audio's own, as decoded
                   "duration": round(len(waveform) / SAMPLE_RATE if (info.duration_estimated and not info.has_video)
                                     or info.duration <= 0 else info.duration, 3),
                   "audio_duration": round(len(waveform) / SAMPLE_RATE, 3),
                   **({"warning": prepared.short} if prepared.short else {})},
        # the model that made it: `transcribe` never loads --model (the notes' model), only the transcription's
        "model": {"id": options.model if options.summarize else options.asr_model,
                  "transcribe_model": options.asr_model, "engine": options.engine,
                  **({"device": plan.memory.get("device"), "dtype": plan.memory.get("dtype")}
                     if options.engine == "transformers" else {"device": "server", "dtype": None}),
                  "quantize": options.quantize, "answers_generated": generated, "g4media": __version__},
        "options": options.to_dict(),
        "timings": timer.seconds,
        "speakers": [{"id": s.id, "name": s.name, "talk_time": s.talk_time, "evidence": list(s.evidence),
                      **({"side": diarization.sides[s.id]} if s.id in diarization.sides else {})}
                     for s in speakers],
        "segments": [s.to_dict() for s in segments],
        "keyframes": [k.to_dict() for k in keyframes],
        "notes": notes,
        "work_dir": str(work),
    }


def notes_counter(plan: Plan, options: RunOptions) -> TokenCounter:
    """The notes model's token counter, the same on every run (so the notes plan, and with it the
    cached answers, do not depend on whether the model happened to be loaded)."""
    if options.model == options.asr_model and plan.counter is not None:
        return plan.counter
    from .errors import ModelError

    try:
        return TokenCounter(load_processor(options.model, local_only=True))
    except ModelError:
        return TokenCounter()


def check_models(options: RunOptions) -> None:
    """Fail before hours of work when a model cannot possibly load: a missing folder, a Hub id that is not
    downloaded while offline, or weights bigger than the free memory. (Online, a missing download starts when the
    model is first needed; its size is checked then.)"""
    from .errors import ModelError
    from .memory import choose_dtype, pick_device
    from .transformers_engine import check_room, download_hint, in_cache, model_shape, offline, resolve_model

    if options.engine != "transformers":
        return
    device = pick_device(options.device)
    for model in dict.fromkeys([options.asr_model, options.model] if options.summarize else [options.asr_model]):
        source, local = resolve_model(model)
        if local or in_cache(source):
            shape = model_shape(model)
            check_room(shape, device, choose_dtype(shape, device, options.dtype, options.quantize), options.quantize)
            continue
        if offline():
            raise ModelError(f"{model} is not downloaded and Hugging Face is offline (HF_HUB_OFFLINE); "
                             f"{download_hint(model)}")
        unreachable = hub_unreachable()
        if unreachable:
            raise ModelError(f"{model} is not downloaded and the Hugging Face Hub cannot be reached "
                             f"({unreachable}); {download_hint(model)}")


def hub_unreachable(timeout: float = 5.0) -> str | None:
    """Why the Hub cannot be reached (one quick try, no retries), or None if it answers at all."""
    import requests
    from huggingface_hub import constants

    try:
        requests.head(constants.ENDPOINT, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        return type(exc).__name__
    return None


def server_options(options: RunOptions) -> ServerOptions:
    """The model server's settings for --engine openai; a missing --server is a ModelError."""
    from .errors import ModelError
    from .openai_engine import ServerOptions

    if not options.server:
        raise ModelError("--engine openai needs --server URL, e.g. --server http://localhost:8000/v1 "
                         "(see docs/SERVING.md for starting vLLM, llama.cpp or Ollama)")
    return ServerOptions(url=options.server, api=options.server_api, api_key_env=options.api_key_env,
                         concurrency=options.concurrency, served_model=options.served_model,
                         timeout=options.server_timeout, context_tokens=options.plan.context_tokens)


def make_engine_factory(options: RunOptions) -> EngineFactory:
    """Engines as the options say: in-process transformers (one load per model id), or a model server
    (--engine openai: one engine per model id, all sharing the server's --concurrency bound)."""
    if options.engine == "openai":
        from .openai_engine import make_server_factory

        ignored = [flag for flag, value in (("--assistant", options.assistant), ("--quantize", options.quantize),
                                            ("--device", options.device), ("--dtype", options.dtype),
                                            ("--batch-size", options.batch_size), ("--compile", options.compile))
                   if value is not None]
        if ignored:
            log.warning("%s %s the in-process engine's; with --server the server decides (docs/SERVING.md)",
                        ", ".join(ignored), "is" if len(ignored) == 1 else "are")
        return make_server_factory(server_options(options))
    if options.engine != "transformers":
        raise G4Error(f"unknown engine {options.engine!r}; choose transformers or openai")
    check_models(options)
    loaded: dict[str, Engine] = {}
    failed: dict[str, G4Error] = {}
    lock = threading.Lock()  # one load per model, also when the pipeline loads it early in a thread

    def factory(model: str) -> Engine:
        from .transformers_engine import EngineOptions, TransformersEngine

        with lock:
            if model in failed:
                raise failed[model]
            if model not in loaded:
                try:
                    loaded[model] = TransformersEngine(EngineOptions(
                        model=model, device=options.device, dtype=options.dtype, quantize=options.quantize,
                        assistant=options.assistant if model == options.model else None,
                        batch_size=options.batch_size, compile=options.compile))
                except G4Error as exc:  # e.g. out of memory: trying again would fail the same way
                    failed[model] = exc
                    raise
            return loaded[model]

    factory.loads_in_process = True  # type: ignore[attr-defined]
    return factory
