"""Recordings with one side of a conversation per channel (or track): told apart, diarized side by side, each
speaker transcribed from their own side."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from conftest import SAMPLES, ffmpeg, truth
from fake_engine import ScriptedEngine

from mediapipe_g4 import media
from mediapipe_g4.diarize import DiarizationOptions
from mediapipe_g4.engine import AudioPart
from mediapipe_g4.errors import G4Error, MediaError
from mediapipe_g4.metrics import diarization_errors
from mediapipe_g4.pipeline import RunOptions, prepare_recording, process_recording
from mediapipe_g4.records import SAMPLE_RATE
from mediapipe_g4.references import Turn
from mediapipe_g4.sides import find_speakers, separate_sides, side_levels, side_options


@pytest.fixture(scope="module")
def calls(tmp_path_factory) -> dict[str, Path]:
    """The phone-call sample (8 kHz) made into stereo files: each speaker on their own channel ("call"), the same
    with the other voice bleeding in 20 dB down and a noise floor ("bleed", two microphones; "uneven": its right
    side recorded 10.5 dB lower, so its voice is as loud as the bleed on the left), the far side 32 dB
    quieter than the near one over a quiet line ("quiet"), one channel the other inverted ("antiphase", a miswired
    microphone), a room heard alike
    on both channels ("room"), mono copied to both ("copy"), everyone on the left ("one_side"); and the two
    sides as two mono tracks of one file ("tracks")."""
    d = tmp_path_factory.mktemp("calls")
    x, rate = sf.read(SAMPLES / "phone_call.wav", dtype="float32")
    sides = np.zeros((len(x), 2), dtype=np.float32)
    for seg in truth("phone_call.wav")["segments"]:
        a, b = round(seg["start"] * rate), round(seg["end"] * rate)
        sides[a:b, int(seg["speaker"][1:]) - 1] = x[a:b]
    delay = round(0.003 * rate)
    bleed = sides.copy()
    bleed[delay:, 0] += 0.1 * sides[:-delay, 1]
    bleed[delay:, 1] += 0.1 * sides[:-delay, 0]
    bleed += np.random.default_rng(0).normal(0, 0.002, bleed.shape).astype(np.float32)
    room = np.stack([x, np.concatenate([np.zeros(4, np.float32), 0.8 * x[:-4]])], axis=1)
    quiet = sides * np.array([1.0, 0.025], dtype=np.float32)
    quiet += np.random.default_rng(1).normal(0, 0.0002, quiet.shape).astype(np.float32)
    files = {}
    uneven = bleed * np.array([1.0, 0.3], dtype=np.float32)  # the right side recorded 10.5 dB lower
    for name, audio in [("call", sides), ("bleed", bleed), ("uneven", uneven), ("quiet", quiet), ("room", room),
                        ("copy", np.stack([x, x], axis=1)), ("antiphase", np.stack([x, -x], axis=1)),
                        ("one_side", np.stack([x, np.zeros_like(x)], axis=1))]:
        files[name] = d / f"{name}.wav"
        sf.write(files[name], audio, rate)
    files["tracks"] = d / "tracks.mkv"
    ffmpeg("-i", str(files["bleed"]), "-filter_complex", "[0:a]channelsplit=channel_layout=stereo[l][r]",
           "-map", "[l]", "-map", "[r]", "-c:a", "flac", str(files["tracks"]))
    return files


def reference() -> list[Turn]:
    return [Turn(s["start"], s["end"], s["speaker"]) for s in truth("phone_call.wav")["segments"]]


def test_sides_are_split_only_when_each_carries_its_own_voices(calls, tmp_path):
    verdicts = {name: separate_sides(side_levels(media.decode_sides(calls[name], tmp_path / name)))
                for name in ("call", "bleed", "quiet", "room", "copy", "one_side")}
    assert verdicts == {"call": True, "bleed": True, "quiet": True, "room": False, "copy": False, "one_side": False}


def test_a_call_is_diarized_side_by_side_and_the_bleed_left_out(calls, tmp_path):
    for name in ("call", "bleed", "uneven"):
        sides = media.decode_sides(calls[name], tmp_path / name)
        found = find_speakers(media.decode_audio(calls[name], tmp_path / name), DiarizationOptions(),
                              lambda sides=sides: sides)
        assert found.speakers == ("S1", "S2") and found.sides == {"S1": 1, "S2": 2}
        scores = diarization_errors(reference(), [Turn(t.start, t.end, t.speaker) for t in found.turns],
                                    found.duration, collar=0.25)
        assert scores["confusion"] == 0 and scores["der"] < 0.03, (name, scores)  # the bleed gives no turns
    mixed = find_speakers(media.decode_audio(calls["room"], tmp_path / "room"), DiarizationOptions(),
                          lambda: media.decode_sides(calls["room"], tmp_path / "room"))
    assert mixed.sides == {} and len(mixed.speakers) == 2  # diarized as one waveform, by voice


def test_channels_that_cancel_out_when_mixed_give_one_channel_as_the_mix(calls, tmp_path, caplog):
    """FFmpeg's mix of a channel and its inverse is silence. Caught whether the sides are decoded or not (a rerun
    whose cached turns say "mixed" decodes the mix alone: it was silence, and the transcript empty)."""
    alone = media.decode_audio(calls["antiphase"], tmp_path / "plain")
    left, _ = media.decode_sides(calls["antiphase"], tmp_path / "sides")
    mixed = media.decode_audio(calls["antiphase"], tmp_path / "sides")
    assert np.abs(left).max() > 0.1 and np.array_equal(mixed, left) and np.allclose(alone, left, atol=1e-6)
    assert caplog.text.count("cancel each other out when mixed") == 2 and "using channel 1 alone" in caplog.text


def test_every_channel_is_in_the_mix(calls, tmp_path):
    """The mix is (L + R) / sqrt 2 as FFmpeg's, and of more channels every one: FFmpeg's own downmix of a 3-, 6-
    or 8-channel file drops the channel it takes for the subwoofer, where a multitrack recorder keeps a mic."""
    ours = media.decode_audio(calls["bleed"], tmp_path / "stereo")
    theirs = np.frombuffer(subprocess.run(
        [media.ffmpeg_binary(), "-v", "error", "-i", str(calls["bleed"]), "-ac", "1", "-ar", "16000", "-f", "f32le",
         "-"], capture_output=True, check=True).stdout, dtype="<f4")
    assert len(ours) == len(theirs) and np.allclose(ours, theirs, atol=1e-5)
    speech, rate = sf.read(SAMPLES / "phone_call.wav", dtype="float32")
    for channels in (3, 6, 8):
        audio = np.zeros((len(speech), channels), dtype=np.float32)
        audio[:, 3 if channels > 3 else 2] = speech  # 2.1's, 5.1's and 7.1's LFE channel
        path = tmp_path / f"poly{channels}.wav"
        sf.write(path, audio, rate)
        if channels == 6:
            ffmpeg("-i", str(path), "-c:a", "flac", str(path.with_suffix(".flac")))
            path = path.with_suffix(".flac")
        mixed = media.decode_audio(path, tmp_path / f"w{channels}")
        assert np.sqrt(np.mean(np.square(mixed))) > 0.1 * np.sqrt(np.mean(np.square(speech))), channels


def test_speaker_counts_are_shared_between_the_sides():
    assert side_options(DiarizationOptions(num_speakers=2), 2).num_speakers == 1
    three = side_options(DiarizationOptions(num_speakers=3), 2)
    assert three.num_speakers is None and three.max_speakers == 2
    assert side_options(DiarizationOptions(), 2).max_speakers == 7
    with pytest.raises(G4Error, match="fewer than"):
        side_options(DiarizationOptions(num_speakers=1, sides="split"), 2)


def test_the_tracks_of_a_file_are_its_sides_with_audio_track_all(calls, media_corpus, tmp_path):
    surround = media_corpus["odd_audio"]
    info = media.probe(calls["tracks"])
    assert media.side_count(info, "all") == 2 and media.side_count(info, None) == 1
    left, right = media.decode_sides(calls["tracks"], tmp_path / "t", track="all")
    stereo = media.decode_sides(calls["bleed"], tmp_path / "s")
    n = len(stereo[0])
    assert abs(len(left) - n) < 160 and len(left) == len(right)  # padded to the container's duration
    assert np.abs(left[:n] - stereo[0][: len(left)]).max() < 1e-3 and np.abs(right[:n] - stereo[1][: len(left)]).max() < 1e-3
    for path, track in [(calls["bleed"], None), (calls["tracks"], "all")]:  # the mix comes in the same pass
        media.decode_sides(path, tmp_path / f"one pass {track}", track=track)
        together = media.decode_audio(path, tmp_path / f"one pass {track}", track=track)
        alone = media.decode_audio(path, tmp_path / f"alone {track}", track=track)
        assert len(together) == len(alone) or track == "all"
        n = min(len(together), len(alone))
        assert np.abs(together[:n] - alone[:n]).max() < 1e-6
    with pytest.raises(MediaError, match="6 audio channels .surround"):
        media.decode_sides(surround, tmp_path / "surround")
    with pytest.raises(MediaError, match="has one audio channel, so there are no sides"):
        media.decode_sides(SAMPLES / "phone_call.wav", tmp_path / "mono")


def test_a_track_that_starts_late_is_heard_to_its_end(tmp_path):
    """Tracks side by side were padded to the longest track's length, and a second track that starts 4 s into an
    MP4 (its own clock, where it ends at 7 s) was cut off at 4 s with no word: the second speaker was lost."""
    first, second = tmp_path / "first.wav", tmp_path / "second.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=4", str(first))
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=500:duration=3", str(second))
    late = tmp_path / "late.mp4"
    ffmpeg("-i", str(first), "-itsoffset", "4", "-i", str(second), "-map", "0:a", "-map", "1:a", "-c:a", "aac",
           str(late))
    info = media.probe(late)
    assert info.audio_end(1) == pytest.approx(7.0, abs=0.1)
    one, two = media.decode_sides(late, tmp_path / "work", track="all")
    assert len(one) == len(two) and len(two) / SAMPLE_RATE == pytest.approx(7.0, abs=0.1)
    assert np.abs(two[int(4.5 * SAMPLE_RATE): int(6.5 * SAMPLE_RATE)]).max() > 0.05  # the late track's sine (1/8)
    assert np.abs(two[: int(3.5 * SAMPLE_RATE)]).max() < 0.01 and np.abs(one[int(4.5 * SAMPLE_RATE):]).max() < 0.01
    assert media.audio_shortfall(info, len(two) / SAMPLE_RATE, "all") is None
    assert "only the first" in media.audio_shortfall(info, 4.0, "all")  # cut off where it was: said


def transcribe(path: Path, options: RunOptions) -> tuple[dict, ScriptedEngine]:
    engine = ScriptedEngine({"transcribe": "words"})
    return process_recording(path, options, lambda model: engine), engine


def test_each_speaker_is_transcribed_from_their_own_side(calls, tmp_path):
    options = RunOptions(cache_dir=str(tmp_path / "cache"), summarize=False, slides=False)
    result, engine = transcribe(calls["bleed"], options)
    assert [(s["id"], s["side"]) for s in result["speakers"]] == [("S1", 1), ("S2", 2)]
    ready = prepare_recording(calls["bleed"], options)  # the turns from the cache, the sides decoded again
    assert ready.diarization.sides == {"S1": 1, "S2": 2}
    assert {r.to_dict()["audio_from"] for r in engine.seen} == {"side1", "side2"}  # `g4media plan --json` shows it
    clips = [(r.speaker, r.audio[0]) for r in engine.seen]
    assert clips and all(part.source == f"side{ready.diarization.sides[spk]}" for spk, part in clips)
    for spk, part in clips:
        own = ready.sides[ready.diarization.sides[spk] - 1]
        first, last = part.sample_range()
        assert np.array_equal(part.samples(), own[first:last])
    mixed_options = RunOptions(cache_dir=str(tmp_path / "cache"), summarize=False, slides=False,
                               diarization=DiarizationOptions(sides="mix"))
    mixed, again = transcribe(calls["bleed"], mixed_options)
    assert "side" not in mixed["speakers"][0] and all(r.audio[0].source == "" for r in again.seen)
    assert mixed["model"]["answers_generated"] == len(again.seen)  # none answered from the other's cache


def test_speakers_are_named_by_their_side(calls, tmp_path, caplog):
    from mediapipe_g4.names import parse_name_overrides

    names = tuple(parse_name_overrides("right=Bob,Left=Alice").items())
    options = RunOptions(cache_dir=str(tmp_path / "cache"), summarize=False, slides=False, names=names)
    result, _ = transcribe(calls["bleed"], options)
    assert [(s["id"], s["name"], s["side"]) for s in result["speakers"]] == [("S1", "Alice", 1), ("S2", "Bob", 2)]
    mixed = RunOptions(cache_dir=str(tmp_path / "cache"), summarize=False, slides=False, names=names,
                       diarization=DiarizationOptions(sides="mix"))
    result, _ = transcribe(calls["bleed"], mixed)
    assert {s["name"] for s in result["speakers"]} == {"Speaker 1", "Speaker 2"}
    assert "the speakers were not found side by side" in caplog.text
    with pytest.raises(G4Error, match="left=Alice"):
        parse_name_overrides("side0=Eve")


def test_audio_parts_of_two_sides_are_cached_apart():
    from mediapipe_g4.answers import request_key
    from mediapipe_g4.engine import EngineRequest

    def key(source: str) -> str:
        return request_key(EngineRequest("transcribe", (AudioPart(1.0, 2.0, None, source),)))

    assert len({key(""), key("side1"), key("side2")}) == 3


def test_diarize_command_splits_and_is_told_not_to(calls, tmp_path, monkeypatch):
    from mediapipe_g4.cli import main

    monkeypatch.setenv("G4MEDIA_CACHE", str(tmp_path))
    runner = CliRunner()
    split = runner.invoke(main, ["diarize", str(calls["call"]), "--json"])
    assert split.exit_code == 0, split.output
    assert json.loads(split.stdout)["sides"] == {"S1": 1, "S2": 2}
    mixed = runner.invoke(main, ["diarize", str(calls["call"]), "--json", "--no-split-channels"])
    assert mixed.exit_code == 0 and "sides" not in json.loads(mixed.stdout)
    mono = runner.invoke(main, ["diarize", str(SAMPLES / "phone_call.wav"), "--split-channels"])
    assert mono.exit_code == 1 and "one audio channel" in mono.output and "Traceback" not in mono.output


def test_a_rerun_decodes_the_sides_only_when_the_turns_were_found_side_by_side(calls, tmp_path):
    options = RunOptions(cache_dir=str(tmp_path / "cache"), summarize=False, slides=False)
    for name, split in [("room", False), ("bleed", True)]:
        first = prepare_recording(calls[name], options)
        assert bool(first.diarization.sides) == split
        assert len(list(first.work.glob("audio-side*.f32"))) == (2 if split else 0)  # a mixed one's are not kept
        media.release_audio(first.work)
        again = prepare_recording(calls[name], options)  # the turns come from the work folder
        assert again.diarization.to_dict() == first.diarization.to_dict() and (first.work / media.AUDIO_FILE).is_file()
        assert len(list(again.work.glob("audio-side*.f32"))) == (2 if split else 0) and len(again.sides) == len(
            first.sides)


def test_one_voice_heard_on_both_sides_is_not_two_speakers():
    """Two microphones in a room with someone between them: that voice is found on both sides at the same times,
    which two people on a call never are (they talk at once only briefly)."""
    from mediapipe_g4.records import Diarization, SpeakerTurn
    from mediapipe_g4.sides import shared_voices

    call = Diarization(30.0, ("S1", "S2"), (SpeakerTurn(0, 10, "S1"), SpeakerTurn(9.2, 20, "S2"),
                                            SpeakerTurn(19.5, 30, "S1"), SpeakerTurn(25, 25.6, "S2")),
                       sides={"S1": 1, "S2": 2})
    assert shared_voices(call) == []  # interruptions and an "mm-hm"
    room = Diarization(30.0, ("S1", "S2", "S3", "S4"),
                       (SpeakerTurn(0, 8, "S1"), SpeakerTurn(8.5, 14, "S2"), SpeakerTurn(8.6, 13.8, "S3"),
                        SpeakerTurn(15, 22, "S4"), SpeakerTurn(22.5, 26, "S2"), SpeakerTurn(22.4, 26.1, "S3")),
                       sides={"S1": 1, "S2": 1, "S3": 2, "S4": 2})
    assert shared_voices(room) == [("S2", "S3")]


def test_a_forced_split_or_a_count_that_the_sides_cannot_meet_is_said(calls, tmp_path, caplog):
    copy = media.decode_sides(calls["copy"], tmp_path / "copy")
    with caplog.at_level("WARNING", logger="mediapipe_g4"):
        find_speakers(media.decode_audio(calls["copy"], tmp_path / "copy"), DiarizationOptions(sides="split"),
                      lambda: copy)
    assert "one voice heard on both, so these channels do not hold a side each" in caplog.text
    caplog.clear()
    bleed = media.decode_sides(calls["bleed"], tmp_path / "bleed")
    with caplog.at_level("WARNING", logger="mediapipe_g4"):
        found = find_speakers(media.decode_audio(calls["bleed"], tmp_path / "bleed"),
                              DiarizationOptions(num_speakers=3), lambda: bleed)
    assert len(found.speakers) == 2 and "--speakers 3: found 2 side by side" in caplog.text


def test_a_count_is_not_said_unmet_by_a_split_given_up_for_the_mix(monkeypatch, caplog):
    """One voice on both sides gives the split up for the mix, which finds exactly --speakers: the warning that the
    sides could not make that total (and to use --no-split-channels) was said all the same."""
    from mediapipe_g4 import sides as sides_module
    from mediapipe_g4.records import Diarization, SpeakerTurn

    one = Diarization(duration=4.0, speakers=("S1",), turns=(SpeakerTurn(0, 4, "S1"),))  # each side: the same voice
    mixed = Diarization(duration=4.0, speakers=("S1", "S2", "S3"), turns=(SpeakerTurn(0, 4, "S1"),))
    monkeypatch.setattr(sides_module, "separate_sides", lambda levels: True)
    monkeypatch.setattr(sides_module, "side_levels", lambda s: None)
    monkeypatch.setattr(sides_module, "balanced", lambda levels: levels)
    monkeypatch.setattr(sides_module, "detect_speech", lambda *a, **k: "speech")
    monkeypatch.setattr(sides_module, "own_speech", lambda *a: ("a region",))
    monkeypatch.setattr(sides_module, "diarize", lambda wav, options, regions=None, hook=None: one if regions else mixed)
    side = np.zeros(64000, dtype=np.float32)
    with caplog.at_level("WARNING", logger="mediapipe_g4"):
        found = find_speakers(side, DiarizationOptions(num_speakers=3), lambda: [side, side])
    assert found is mixed and "side by side" not in caplog.text
