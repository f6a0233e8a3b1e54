"""The FFmpeg front end on the committed samples and on bad inputs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_NAMES, ffmpeg, truth

from mediapipe_g4 import media, video
from mediapipe_g4.errors import MediaError
from mediapipe_g4.records import SAMPLE_RATE, AudioStream, MediaInfo


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_decode_audio_matches_truth(samples_dir, tmp_path, name):
    wave = media.decode_audio(samples_dir / name, tmp_path)
    assert isinstance(wave, np.memmap)
    assert wave.dtype == np.float32 and wave.ndim == 1  # mono float32
    duration = len(wave) / SAMPLE_RATE
    assert abs(duration - truth(name)["duration"]) <= 0.040
    assert 0.01 < float(np.abs(wave).max()) <= 1.5  # real signal, sane scale
    # speech lies where the truth says: louder inside segments than in the gaps
    seg = truth(name)["segments"][0]
    inside = wave[int(seg["start"] * SAMPLE_RATE): int(seg["end"] * SAMPLE_RATE)]
    assert np.sqrt(np.mean(inside**2)) > 5 * np.sqrt(np.mean(wave[: int(max(seg["start"] - 0.05, 0.01) * SAMPLE_RATE)] ** 2) + 1e-12)


def test_decode_audio_is_reused_and_atomic(samples_dir, tmp_path):
    first = media.decode_audio(samples_dir / "phone_call.wav", tmp_path)
    stamp = (tmp_path / media.AUDIO_FILE).stat().st_mtime_ns
    second = media.decode_audio(samples_dir / "phone_call.wav", tmp_path)
    assert (tmp_path / media.AUDIO_FILE).stat().st_mtime_ns == stamp
    assert np.array_equal(first, second)
    assert not list(tmp_path.glob("*.part"))


def test_probe_samples(samples_dir):
    info = media.probe(samples_dir / "standup.mp4")
    assert info.has_audio and info.has_video
    assert info.audio_streams[0].channels == 2 and info.audio_streams[0].sample_rate == 44100
    assert (info.video_streams[0].width, info.video_streams[0].height) == (640, 360)
    phone = media.probe(samples_dir / "phone_call.wav")
    assert phone.audio_streams[0].sample_rate == 8000 and not phone.has_video


def test_an_mp4_cut_off_after_its_index_is_said_by_probe(samples_dir, tmp_path):
    """An MP4 whose index comes first, copied part-way: FFmpeg states the whole duration and says nothing; only
    decoding showed it (audio_shortfall). The index's own stream sizes against the file's size tell at once."""
    whole = samples_dir / "standup.mp4"
    intact = media.probe(whole)
    assert intact.indexed_bytes and intact.size_bytes >= intact.indexed_bytes and media.cut_off(intact) is None
    cut = tmp_path / "standup.mp4"
    cut.write_bytes(whole.read_bytes()[: intact.size_bytes // 2])
    info = media.probe(cut)
    assert info.duration == intact.duration  # the index still says the whole length
    assert "cut off" in media.cut_off(info) and "0.3 MB of the 0.5 MB" in media.cut_off(info)
    assert media.probe(samples_dir / "interview.mp3").indexed_bytes is None  # no exact index to compare with


def test_frames_at_one_per_second(samples_dir):
    frames = video.iter_frames(samples_dir / "standup.mp4", max_size=320)
    times, shapes = [], set()
    for f in frames:
        times.append(f.time)
        shapes.add(f.image.shape)
    assert times == [float(k) for k in range(len(times))]
    assert abs(len(times) - truth("standup.mp4")["duration"]) <= 1.0
    assert shapes == {(180, 320, 3)}


def test_keyframes_at_slide_changes(samples_dir, tmp_path):
    found = video.extract_keyframes(samples_dir / "standup.mp4", tmp_path)
    slides = [s["time"] for s in truth("standup.mp4")["slides"]]
    assert len(found) == len(slides)  # one keyframe per slide, however long it stays
    for kf, t in zip(found, slides):
        assert 0 <= kf.time - t <= 1.0
        assert kf.end > kf.time
    assert all(tmp_path in __import__("pathlib").Path(k.image_path).parents for k in found)
    # the second call reads the index instead of decoding again
    assert video.extract_keyframes(samples_dir / "standup.mp4", tmp_path) == found


def test_keyframes_are_found_again_when_fresh_or_found_by_other_code(samples_dir, tmp_path, monkeypatch):
    path = samples_dir / "standup.mp4"
    found = video.extract_keyframes(path, tmp_path)
    calls, real = [], video.find_keyframes
    monkeypatch.setattr(video, "find_keyframes", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert video.extract_keyframes(path, tmp_path) == found and calls == []  # from the index
    assert video.extract_keyframes(path, tmp_path, fresh=True) == found and len(calls) == 1
    index = tmp_path / "keyframes" / "index.json"
    kept = json.loads(index.read_text())
    index.write_text(json.dumps({**kept, "key": "made-by-another-version"}))
    assert video.extract_keyframes(path, tmp_path) == found and len(calls) == 2
    index.write_text(json.dumps(kept["keyframes"]))  # the index of versions before the key: a bare list
    assert video.extract_keyframes(path, tmp_path) == found and len(calls) == 3
    assert video.extract_keyframes(path, tmp_path, max_size=320) != found and len(calls) == 4  # other settings


def test_kept_keyframes_follow_a_moved_work_folder_and_damage_finds_them_again(samples_dir, tmp_path, monkeypatch):
    """The index names its images, not their absolute paths: a work folder moved (another --cache-dir, a volume
    mounted elsewhere) keeps its keyframes. An index cut short or an image gone is found again, never an error."""
    import shutil

    path = samples_dir / "standup.mp4"
    found = video.extract_keyframes(path, tmp_path / "before")
    shutil.move(tmp_path / "before", tmp_path / "after")
    calls, real = [], video.find_keyframes
    monkeypatch.setattr(video, "find_keyframes", lambda *a, **k: calls.append(1) or real(*a, **k))
    moved = video.extract_keyframes(path, tmp_path / "after")
    assert calls == [] and [k.image_path for k in moved] == [
        k.image_path.replace(str(tmp_path / "before"), str(tmp_path / "after")) for k in found]
    assert all(Path(k.image_path).is_file() for k in moved)
    index = tmp_path / "after" / "keyframes" / "index.json"
    Path(moved[1].image_path).unlink()
    assert video.extract_keyframes(path, tmp_path / "after") == moved and len(calls) == 1
    index.write_text(index.read_text()[:50])
    assert video.extract_keyframes(path, tmp_path / "after") == moved and len(calls) == 2


def test_a_sparse_variable_rate_video_keeps_every_slide(tmp_path):
    """A variable-rate screen recording holds a frame where the picture changes, and the last slide's only frame
    may be one that no other frame refers to: the decoder skipped those, and that slide (on screen 200 s) was
    never seen."""
    colours = ["red", "green", "blue", "yellow", "white", "black"]
    for i, colour in enumerate(colours):
        ffmpeg("-f", "lavfi", "-i", f"color=c={colour}:s=320x240", "-frames:v", "1", str(tmp_path / f"s{i}.png"))
    (tmp_path / "list.txt").write_text("".join(f"file 's{i}.png'\nduration {d}\n" for i, d in
                                               enumerate((120, 5, 300, 60, 2, 200))) + "file 's5.png'\n")
    for name in ("vfr.mp4", "vfr.mkv"):  # Matroska states a nominal 25 fps for the same frames
        path = tmp_path / name
        ffmpeg("-f", "concat", "-i", str(tmp_path / "list.txt"), "-fps_mode", "vfr", "-c:v", "libx264",
               "-pix_fmt", "yuv420p", str(path))
        seen = {f.time: tuple(int(c) for c in f.image[5, 5]) for f in video.iter_frames(path) if f.time in (486, 550)}
        assert min(seen[486]) > 200, name  # white
        assert max(seen[550]) < 20, name  # black, not the white before it


def test_the_last_slide_of_a_variable_rate_video_is_seen(tmp_path):
    """A variable-rate video whose last slide is one frame (shown to the end of the recording, which the audio
    sets): FFmpeg's fps filter drops such a lone last frame, and that slide never reached the notes."""
    for i, colour in enumerate(["red", "white", "blue"]):  # apart in brightness too (red and green are not)
        ffmpeg("-f", "lavfi", "-i", f"color=c={colour}:s=320x240", "-frames:v", "1", str(tmp_path / f"s{i}.png"))
    (tmp_path / "list.txt").write_text("file 's0.png'\nduration 5\nfile 's1.png'\nduration 7\nfile 's2.png'\n")
    for name in ("last.mp4", "last.mkv"):
        path = tmp_path / name
        ffmpeg("-f", "concat", "-i", str(tmp_path / "list.txt"), "-f", "lavfi", "-i", "sine=duration=20",
               "-map", "0:v", "-map", "1:a", "-fps_mode", "vfr", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path))
        frames = list(video.iter_frames(path))
        assert 19 <= len(frames) <= 21, (name, len(frames))  # to the recording's end, not past it
        assert max(frames[-1].image[5, 5][:2]) < 20 and frames[-1].image[5, 5][2] > 200, name  # blue
        assert [k.time for k in video.extract_keyframes(path, tmp_path / f"work-{name}")] == [0, 5, 12], name


def test_static_video_is_one_keyframe_and_moving_video_few(media_corpus, tmp_path):
    assert len(video.extract_keyframes(media_corpus["silent_video"], tmp_path / "a")) == 1
    moving = video.extract_keyframes(media_corpus["truncated"].with_name("full.mp4"), tmp_path / "b")
    assert 1 <= len(moving) <= 2  # a moving test pattern is not a new slide every second


def test_a_video_that_does_not_decode_gives_no_slides_and_a_warning(media_corpus, tmp_path, caplog):
    """Its sound is still worth a transcript: no keyframes, a warning with FFmpeg's reason, nothing cached."""
    path = media_corpus["broken_video"]
    with pytest.raises(MediaError, match="could not decode the video"):
        list(video.iter_frames(path))  # FFmpeg decodes not one frame of it
    with caplog.at_level("WARNING", logger="mediapipe_g4"):
        assert video.extract_keyframes(path, tmp_path) == []
    assert "could not decode the video" in caplog.text and "going on without slides" in caplog.text
    assert not (tmp_path / "keyframes" / "index.json").exists()  # another FFmpeg may do better next time
    assert len(media.decode_audio(path, tmp_path)) == pytest.approx(64.0 * SAMPLE_RATE, rel=0.01)


def test_keyframes_from_synthetic_frames(tmp_path):
    """A one-word edit counts; encoder-like noise does not."""
    rng = np.random.default_rng(0)
    base = np.full((90, 160, 3), 235, np.uint8)
    edited = base.copy()
    edited[40:48, 20:40] = 20  # a short dark word appears
    frames = []
    for k in range(12):
        img = edited if k >= 7 else base
        noise = rng.integers(-3, 4, img.shape)
        frames.append(video.Frame(time=float(k), image=np.clip(img + noise, 0, 255).astype(np.uint8)))
    found = video.find_keyframes(frames, tmp_path, duration=12.0)
    assert [k.time for k in found] == [0.0, 7.0]
    assert [k.end for k in found] == [7.0, 12.0]


def test_odd_rate_and_channels(media_corpus, tmp_path):
    wave = media.decode_audio(media_corpus["odd_audio"], tmp_path)
    assert abs(len(wave) / SAMPLE_RATE - 2.5) <= 0.040
    info = media.probe(media_corpus["odd_audio"])
    assert info.audio_streams[0].channels == 6 and info.audio_streams[0].sample_rate == 11025


def test_start_offset_is_removed(media_corpus, tmp_path):
    info = media.probe(media_corpus["offset"])
    assert info.start_time > 1.0
    wave = media.decode_audio(media_corpus["offset"], tmp_path, info=info)
    assert abs(len(wave) / SAMPLE_RATE - 2.0) <= 0.1


@pytest.mark.parametrize("key, message", [
    ("empty", "empty"),
    ("text_mp4", "not a readable media file"),
    ("random", "not a readable media file"),
])
def test_bad_files_are_clear_errors(media_corpus, key, message):
    with pytest.raises(MediaError, match=message):
        media.probe(media_corpus[key])


def test_missing_and_folder(tmp_path):
    with pytest.raises(MediaError, match="no such file"):
        media.probe(tmp_path / "nope.mp4")
    with pytest.raises(MediaError, match="is a folder"):
        media.probe(tmp_path)


def test_video_without_audio(media_corpus, tmp_path):
    info = media.probe(media_corpus["silent_video"])
    assert info.has_video and not info.has_audio
    with pytest.raises(MediaError, match="no audio track"):
        media.decode_audio(media_corpus["silent_video"], tmp_path)
    assert not list(tmp_path.iterdir())


def test_truncated_file_decodes_what_is_there_or_fails_clearly(media_corpus, tmp_path):
    try:
        wave = media.decode_audio(media_corpus["truncated"], tmp_path)
    except MediaError as exc:
        assert "truncated" in str(exc) or "not a readable" in str(exc) or "could not decode" in str(exc)
        assert not (tmp_path / media.AUDIO_FILE).exists()
    else:
        assert len(wave) / SAMPLE_RATE < 6.1


def test_rotation_and_fallback_parser(samples_dir, monkeypatch):
    assert media._rotation({"side_data_list": [{"rotation": -90}]}) == 270
    assert media._rotation({"tags": {"rotate": "90"}}) == 90
    rotated = media.MediaInfo("x", "mp4", 1.0, 0.0, 1, (), (media.VideoStream(0, "h264", 1920, 1080, 30.0, 90),))
    assert video.frame_size(rotated, 640) == (360, 640)
    # without ffprobe (imageio-ffmpeg ships none) the facts come from `ffmpeg -i`
    with_probe = media.probe(samples_dir / "standup.mp4")
    monkeypatch.setattr(media, "ffprobe_binary", lambda: None)
    parsed = media.probe(samples_dir / "standup.mp4")
    assert abs(parsed.duration - with_probe.duration) < 0.02
    assert parsed.audio_streams[0].sample_rate == 44100 and parsed.audio_streams[0].channels == 2
    assert (parsed.video_streams[0].width, parsed.video_streams[0].height) == (640, 360)


def test_moving_tile_beside_slides_is_ignored(tmp_path):
    """A webcam tile that moves every frame neither hides a slide change nor makes keyframes itself."""
    rng = np.random.default_rng(1)
    frames = []
    for k in range(40):
        img = np.full((180, 320, 3), 240, np.uint8)
        img[20:30, 20:120 if k < 25 else 160] = 10  # the slide's title grows at 25 s
        img[120:175, 240:315] = rng.integers(0, 255, (55, 75, 3))  # the "webcam"
        frames.append(video.Frame(time=float(k), image=img))
    found = video.find_keyframes(frames, tmp_path, duration=40.0)
    assert [k.time for k in found][-1] == 25.0
    assert len(found) <= 3  # the first frame, perhaps one while the tile's motion is learned, the slide


@pytest.mark.parametrize("decoded, said", [(10.0, False), (9.1, False), (8.5, True), (2.0, True)])
def test_audio_shortfall_is_said_past_a_second_or_two_percent(decoded, said):
    audio = AudioStream(index=0, codec="aac", sample_rate=16000, channels=1, duration=10.0)
    info = MediaInfo(path="x.m4a", format_name="mov", duration=10.02, start_time=0.0, size_bytes=1,
                     audio_streams=(audio,))
    short = media.audio_shortfall(info, decoded)
    assert (short is not None) == said
    if said:
        assert short.startswith(f"only the first 00:0{int(decoded)} of the 00:10 of audio")


def test_a_wav_cut_short_is_measured_by_its_header(samples_dir, tmp_path):
    whole = (samples_dir / "phone_call.wav").read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole[:40_000])  # a copy that stopped early: FFmpeg alone measures 2.5 s
    info = media.probe(cut)
    assert info.duration == pytest.approx(38.1, abs=0.1)
    assert media.audio_shortfall(info, 2.5).startswith("only the first 00:02 of the 00:38")
    assert media.probe(samples_dir / "phone_call.wav").duration == pytest.approx(38.1, abs=0.1)
    unfinished = tmp_path / "recording.wav"  # a recorder's placeholder size: nothing to say
    at = whole.index(b"data")
    unfinished.write_bytes(whole[:at + 4] + b"\xff\xff\xff\xff" + whole[at + 8:40_000])
    assert media.probe(unfinished).duration < 3


def test_a_wav_whose_header_states_less_than_it_holds_is_decoded_whole(samples_dir, tmp_path, caplog):
    """A recorder that stopped updating its header (or a size past 4 GB, wrapped): FFmpeg stopped where the header
    said, and the rest of the meeting was never transcribed, without a word. A chunk of tags after the audio is
    no audio."""
    whole = (samples_dir / "phone_call.wav").read_bytes()
    at = whole.index(b"data")
    rate = int.from_bytes(whole[28:32], "little")  # bytes a second
    stale = tmp_path / "stale.wav"
    stale.write_bytes(whole[:at + 4] + (10 * rate).to_bytes(4, "little") + whole[at + 8:])
    info = media.probe(stale)
    assert info.duration == pytest.approx(38.1, abs=0.1) and info.wav_held_seconds
    assert len(media.decode_audio(stale, tmp_path / "w")) / SAMPLE_RATE == pytest.approx(38.1, abs=0.1)
    assert caplog.text.count("its header states 00:10 of audio, but the file holds 00:38") == 1
    for tag in (b"LIST", b"id3 "):  # the whole audio, then a chunk of tags (or cover art) of 100 kB: as it is
        tagged = tmp_path / "tagged.wav"
        tagged.write_bytes(whole + tag + (100_000).to_bytes(4, "little") + b"\0" * 100_000)
        assert not media.probe(tagged).wav_held_seconds, tag


def test_a_duration_estimated_from_the_bitrate_is_not_taken_for_a_cut_file(samples_dir, tmp_path):
    """Raw AAC has no index: FFmpeg guesses 39.6 s from the bitrate for 38.1 s of audio, and the complete file was
    said to be "incomplete". Such a guess was also found 13 times the length of a whole file (a VBR MP3 without
    its header): it says nothing of a shortfall."""
    raw = tmp_path / "call.aac"
    subprocess.run([media.ffmpeg_binary(), "-v", "error", "-i", str(samples_dir / "phone_call.wav"), "-c:a", "aac",
                    "-f", "adts", str(raw)], check=True)
    info = media.probe(raw)
    assert info.duration_estimated and info.duration > 38.5  # the guess, over the 38.1 s there is
    assert media.audio_shortfall(info, media.decode_audio(raw, tmp_path / "work").shape[0] / SAMPLE_RATE) is None
    assert media.audio_shortfall(info, info.duration / 2) is None
    assert not media.probe(samples_dir / "phone_call.wav").duration_estimated


def test_a_tracks_length_from_its_matroska_tag():
    assert media._tag_duration({"tags": {"DURATION": "00:00:38.115000000"}}) == pytest.approx(38.115)
    assert media._tag_duration({"tags": {"DURATION-eng": "01:02:03.5"}}) == pytest.approx(3723.5)  # mkvmerge's
    assert media._tag_duration({"tags": {"title": "Mic"}}) is None and media._tag_duration({}) is None


def test_a_track_of_unknown_length_is_judged_against_the_file_only_when_it_is_all_the_audio():
    def info(*durations):
        tracks = tuple(AudioStream(index=i, codec="aac", sample_rate=16000, channels=1, duration=d)
                       for i, d in enumerate(durations))
        return MediaInfo(path="x.mkv", format_name="matroska", duration=60.0, start_time=0.0, size_bytes=1,
                         audio_streams=tracks)

    assert media.audio_shortfall(info(None), 30.0) is not None  # the file's length is its one track's
    assert media.audio_shortfall(info(None, None), 30.0, 1) is None  # the other track may be the long one
    assert media.audio_shortfall(info(None, None), 30.0, "all") is not None
    assert media.audio_shortfall(info(50.0, None), 30.0, 1) is not None  # its own length says it is cut off


def test_audio_tracks_one_by_number_or_all_mixed(samples_dir, tmp_path):
    """A recording with two named audio tracks (as OBS writes them): the first by default, another by number, or
    both summed on one clock; each choice is its own work folder; a track that is not there is a clear error."""
    from conftest import ffmpeg

    from mediapipe_g4.workdir import media_work_dir

    path = tmp_path / "two tracks.mkv"
    ffmpeg("-i", str(samples_dir / "phone_call.wav"), "-i", str(samples_dir / "interview.mp3"),
           "-map", "0:a", "-map", "1:a", "-c:a", "pcm_f32le", "-ar", "16000", "-ac", "1",
           "-metadata:s:a:0", "title=Mic", "-metadata:s:a:1", "title=Desktop", "-metadata:s:a:1", "language=eng",
           str(path))
    info = media.probe(path)
    assert [(a.title, a.language) for a in info.audio_streams] == [("Mic", None), ("Desktop", "eng")]
    assert media.describe_tracks(info) == '1 "Mic", 2 "Desktop" (eng)'
    alone = [media.decode_audio(samples_dir / name, tmp_path / name) for name in ("phone_call.wav", "interview.mp3")]
    tracks = {}
    for choice, variant in ((None, ""), (1, ""), (2, "a2"), ("all", "amix")):
        assert media.audio_variant(info, choice) == variant
        work = media_work_dir("0" * 64, tmp_path / "cache", variant)
        tracks[choice] = np.asarray(media.decode_audio(path, work, info=info, track=choice))
    assert work.name == "0" * 24 + "-amix"
    first, second = alone[0], alone[1]
    assert np.array_equal(tracks[None], tracks[1]) and np.allclose(tracks[1][: len(first)], first, atol=1e-4)
    assert np.allclose(tracks[2][: len(second)], second, atol=1e-3)  # the MP3's decoder, then the same resampler
    mixed = tracks["all"]
    assert len(mixed) >= max(len(first), len(second)) - 2 * SAMPLE_RATE // 100
    n = min(len(first), len(second), len(mixed))
    assert np.allclose(mixed[:n], tracks[1][:n] + tracks[2][:n], atol=1e-3)  # summed, not averaged
    # Each track's own length (Matroska's DURATION tags): the shorter track is not taken for a cut-off file.
    lengths = [a.duration for a in info.audio_streams]
    assert lengths == pytest.approx([len(first) / SAMPLE_RATE, len(second) / SAMPLE_RATE], abs=0.05)
    assert lengths[0] < info.duration - 2
    assert all(media.audio_shortfall(info, len(tracks[c]) / SAMPLE_RATE, c) is None for c in (1, 2, "all"))
    for bad in (3, 0):
        with pytest.raises(MediaError, match=r'has 2 audio tracks \(1 "Mic", 2 "Desktop" \(eng\)\); --audio-track '
                                             r"takes 1 to 2 or all"):
            media.audio_tracks(info, bad)
    with pytest.raises(MediaError, match="has only one audio track, so there is no track 2; leave out --audio-track"):
        media.audio_tracks(media.probe(samples_dir / "phone_call.wav"), 2)


def test_decode_removes_what_a_killed_run_left(samples_dir, tmp_path):
    # A run killed while decoding (kill -9, a crash) left `.audio.f32.PID.part` behind for good: 230 MB an hour of
    # recording, more for a call's sides. Those of a process that is gone go; a run still decoding keeps its own.
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = tmp_path / f".{media.AUDIO_FILE}.{gone.pid}.part"
    running = tmp_path / f".{media.AUDIO_FILE}.{os.getppid()}.part"
    for part in (stale, running):
        part.write_bytes(b"\0" * 4096)
    media.decode_audio(samples_dir / "phone_call.wav", tmp_path)
    assert not stale.exists() and running.exists()


@pytest.mark.skipif(os.name == "nt", reason="file locks (fcntl.flock) are POSIX")
def test_a_part_held_by_a_writer_elsewhere_is_kept(tmp_path):
    """A pid means nothing across containers or hosts sharing a work folder: a part whose writer's pid is not
    running here, but which a writer holds open (`atomic.hold`), is another machine's work in progress."""
    from mediapipe_g4 import atomic

    gone = subprocess.Popen(["true"])
    gone.wait()
    for folder, held in ((tmp_path / "held", True), (tmp_path / "left", False)):
        folder.mkdir()
        part = folder / f".{media.AUDIO_FILE}.{gone.pid}.part"
        with open(part, "wb") as out:
            if held:
                atomic.hold(out.fileno())
            atomic.remove_stale_parts(folder)
            assert part.exists() == held


def test_progress_of_decoding_and_slides_ends_complete(samples_dir, tmp_path):
    # The bars of finished steps stayed at 511/512 (the last whole second counted, the last frame's time).
    calls = []
    media.decode_audio(samples_dir / "standup.mp4", tmp_path, hook=lambda *a: calls.append(a))
    video.extract_keyframes(samples_dir / "standup.mp4", tmp_path, hook=lambda *a: calls.append(a))
    last = {step: (done, total) for step, done, total in calls}
    assert last["decode"][0] == last["decode"][1] and last["keyframes"][0] == last["keyframes"][1]


def test_an_mp4_whose_recording_never_finished_is_said_to_be_one(samples_dir, tmp_path):
    """A phone or screen recorder writes an MP4's index last: a recording cut off before it (a crash, a full disk)
    got FFmpeg's "moov atom not found | Invalid data found", which says nothing a user can act on."""
    whole = tmp_path / "whole.mp4"
    ffmpeg("-i", str(samples_dir / "standup.mp4"), "-c", "copy", str(whole))  # the index at the end, as recorded
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(MediaError, match="cut.mp4 is an MP4/MOV recording that was never finished: its index"):
        media.probe(cut)
    text = tmp_path / "notes.mp4"  # not an MP4 at all: FFmpeg only guesses it is one
    text.write_text("meeting notes\n" * 20)
    with pytest.raises(MediaError, match="notes.mp4 is not a readable media file"):
        media.probe(text)
