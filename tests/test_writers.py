"""Output writers and report templates: contents of every format, timing validity, escaping of
recording text, reports without notes, odd names, and atomic writes."""

from __future__ import annotations

import base64
import copy
import itertools
import json
import math
import os
import random
import re
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from mediapipe_g4 import report_view, subtitles, templating, writers
from mediapipe_g4.errors import OutputError
from mediapipe_g4.index_page import failed_entry, index_entry, write_index
from mediapipe_g4.subtitles import subtitle_cues
from mediapipe_g4.writers import WRITERS, get_writer, output_stem, output_stems, safe_stem, write_outputs

FIXTURE = Path(__file__).parent / "fixtures" / "standup_result.json"
XSS = "<script>alert(1)</script>"
ATTR_XSS = '"><img src=x onerror=alert(1)>'
MD_LINK = "[click me](javascript:alert(1))"


def make_keyframes(result: dict, work: Path) -> None:
    for number, kf in enumerate(result["keyframes"], 1):
        image = Image.new("RGB", (kf["width"], kf["height"]), (248, 248, 245))
        draw = ImageDraw.Draw(image)
        draw.rectangle([0, 0, kf["width"], 60], fill=(36, 64, 110))
        draw.text((24, 20), f"Slide {number}", fill="white")
        path = work / kf["image_path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=80)


@pytest.fixture
def result() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


@pytest.fixture
def work(tmp_path: Path, result: dict) -> Path:
    folder = tmp_path / "work"
    make_keyframes(result, folder)
    return folder


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def render(name: str, result: dict, path: Path, media_dir: Path | None = None) -> str:
    get_writer(name).write(result, path, media_dir=media_dir)
    return path.read_text(encoding="utf-8")


def visible_text(html: str) -> str:
    """The HTML's text, roughly as a reader sees it (tags removed, entities kept)."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def hostile(result: dict) -> dict:
    r = copy.deepcopy(result)
    r["speakers"][0]["name"] = f"Alice {XSS}"
    r["speakers"][1]["name"] = f"Bob {ATTR_XSS}"
    r["segments"][0]["text"] = f"Look {XSS} and {MD_LINK} and ![img](http://evil.example/x.png) <b>bold</b>"
    r["segments"][1]["text"] = "# not a heading\n\n- not a list | nor | a table `code` *em* _em_"
    notes = r["notes"]
    notes["summary"] = f"# Heading?\n\n{XSS} {MD_LINK}"
    notes["decisions"][0]["text"] = f"Decide {XSS} {MD_LINK}"
    notes["action_items"][0]["owner"] = f"Mallory {XSS}"
    notes["action_items"][1]["due"] = f"{MD_LINK}"
    notes["chapters"][0]["title"] = f"{XSS}"
    notes["questions"][0]["text"] = f"Why {ATTR_XSS}?"
    r["options"]["language"] = XSS
    r["source"]["name"] = f"stand {XSS}.mp4"
    return r


# -- registry and files --------------------------------------------------------------------


def test_registry_names_and_extensions():
    assert list(WRITERS) == ["json", "srt", "vtt", "txt", "md", "html"]
    for name in WRITERS:
        writer = get_writer(name)
        assert writer.name == name and writer.extension == name
    assert get_writer("SRT").name == "srt" and get_writer("markdown").name == "md"
    with pytest.raises(OutputError, match="Unknown output format 'docx'.*json, srt, vtt, txt, md, html"):
        get_writer("docx")


def test_write_outputs_writes_every_format(result, work, out):
    paths = write_outputs(result, out, "standup", ["html", "md", "json", "srt", "vtt", "txt", "srt"], media_dir=work)
    assert [p.name for p in paths] == ["standup.html", "standup.md", "standup.json", "standup.srt", "standup.vtt", "standup.txt"]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)  # no temporary files left
    assert all(p.stat().st_size > 0 for p in paths)
    assert [p.name for p in write_outputs(result, out, "standup", "json,srt")] == ["standup.json", "standup.srt"]
    assert len(write_outputs(result, out, "standup", ["all"], media_dir=work)) == 6


def test_unknown_format_writes_nothing(result, out):
    with pytest.raises(OutputError, match="Unknown output format"):
        write_outputs(result, out, "standup", ["json", "pdf"])
    assert list(out.iterdir()) == []


def test_output_folder_is_created(result, tmp_path):
    paths = write_outputs(result, tmp_path / "new" / "deep", "standup", ["txt"])
    assert paths[0].exists()


def test_new_files_follow_the_umask(result, out):
    old = os.umask(0o022)
    try:
        path = get_writer("txt").write(result, out / "a.txt")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("standup.mp4", "standup"),
        ("Weekly sync 2024-05-02.mp4", "Weekly sync 2024-05-02"),
        ("Réunion <b>équipe<i> & co 会议.ogg", "Réunion _b_équipe_i_ & co 会议"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini.wav", "boot.ini"),
        ("...", "recording"),
        (".hidden.mp3", "hidden"),
        ("a\x00b\nc.wav", "a_b_c"),
        ("", "recording"),
    ],
)
def test_output_stem_is_safe(name, stem):
    assert output_stem(name) == stem


def test_recordings_whose_outputs_would_share_a_name_get_their_whole_names():
    a, b, c, d, e = (Path(p) for p in ("d1/meeting.wav", "d2/meeting.wav", "d1/meeting.mp3", "d1/Notes.m4a",
                                          "d1/standup.mp4"))
    assert output_stems([e, d]) == {e: "standup", d: "Notes"}  # no clash: the usual stems
    assert output_stems([a, c, e]) == {a: "meeting.wav", c: "meeting.mp3", e: "standup"}
    assert output_stems([a, b, c]) == {a: "meeting.wav", b: "meeting.wav-2", c: "meeting.mp3"}
    if sys.platform in ("darwin", "win32"):  # disks blind to case
        assert output_stems([d, Path("d2/notes.wav")]) == {d: "Notes.m4a", Path("d2/notes.wav"): "notes.wav"}
    else:
        assert output_stems([d, Path("d2/notes.wav")]) == {d: "Notes", Path("d2/notes.wav"): "notes"}
    f = Path("x.wav-2.mp3")  # its own stem is what the -2 of another would be
    assert output_stems([Path("a/x.wav"), Path("b/x.wav"), f]) == {
        Path("a/x.wav"): "x.wav", Path("b/x.wav"): "x.wav-2", f: "x.wav-2-2"}
    # The one whose outputs are there from before keeps its name (a new sibling does not rename them).
    assert output_stems([a, c], owns=lambda p, stem: p == a) == {a: "meeting", c: "meeting.mp3"}
    # and one whose namesake is gone keeps its whole name, under which its outputs are (it was done again as "meeting")
    assert output_stems([a], owns=lambda p, stem: stem == "meeting.wav") == {a: "meeting.wav"}
    assert output_stems([a], owns=lambda p, stem: True) == {a: "meeting"}
    # Names alike for longer than a stem may be (50 Chinese characters): the -2 was put after the longest stem,
    # cut off again when written, and both recordings wrote (and in a batch, redid) one set of outputs.
    long_a, long_b = (Path(f"{'会議の録音' * 12}_2024-05-0{day}.wav") for day in (1, 8))
    stems = output_stems([long_a, long_b])
    assert len({safe_stem(s) for s in stems.values()}) == 2 and stems[long_b].endswith("-2")
    assert all(safe_stem(s) == s and len(s.encode()) <= 150 for s in stems.values())


def test_safe_stem_never_leaves_the_folder():
    for raw in ["..", ".", "../x", "a/../../b", "/etc/passwd", "C:\\x", "\u202e\u0000", "  ", "x" * 400, "é" * 200]:
        stem = safe_stem(raw)
        assert stem and "/" not in stem and "\\" not in stem and stem not in {".", ".."}
        assert not stem.startswith(".")
        assert len(stem.encode()) <= writers.MAX_STEM_BYTES


def test_unicode_spaced_and_markup_names(result, work, out):
    result["source"]["name"] = "Réunion <b>équipe<i> & co 会议.mp4"
    result["speakers"][0]["name"] = "Zoë Ångström"
    result["speakers"][2]["name"] = "Carol 王"
    stem = output_stem(result["source"]["name"])
    paths = write_outputs(result, out, stem, list(WRITERS), media_dir=work)
    assert all(p.parent == out for p in paths)
    html = paths[-1].read_text(encoding="utf-8")
    assert "<title>Réunion &lt;b&gt;équipe&lt;i&gt; &amp; co 会议 – meeting notes</title>" in html
    assert "Zoë Ångström" in html and "Carol 王" in html
    assert "Zoë Ångström: Good morning" in (out / f"{stem}.srt").read_text(encoding="utf-8")
    assert json.loads((out / f"{stem}.json").read_text(encoding="utf-8"))["speakers"][0]["name"] == "Zoë Ångström"
    assert "会议" in (out / f"{stem}.json").read_text(encoding="utf-8")  # UTF-8, not \\u escapes


def test_file_names_that_are_not_utf8_and_control_characters(result, work, out):
    """A Latin-1 file name (Python holds its stray bytes as lone surrogates) and control characters typed into an
    edited X.json: every format is written, as UTF-8, the bad bytes as U+FFFD and no control character left."""
    name = os.fsdecode(b"r\xe9union\x1b]0;x\x07.mp4")
    result["source"].update(name=name, path=os.fsdecode(b"/rec/r\xe9union.mp4"))
    result["segments"][0]["text"] = "Good\x00 morning\x1b[2J everyone"
    result["speakers"][0]["name"] = "Ali\x9bce\u202e"  # a C1 control, a right-to-left override
    stem = output_stem(name)
    assert stem == "r\ufffdunion_]0;x_"
    paths = write_outputs(result, out, stem, list(WRITERS), media_dir=work)
    for path in paths:
        text = path.read_bytes().decode("utf-8")  # strict: no lone surrogate made it to a file
        assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]", text), path.name
    data = json.loads(paths[0].read_text(encoding="utf-8"))
    assert data["source"]["name"] == "r\ufffdunion]0;x.mp4" and data["source"]["path"] == "/rec/r\ufffdunion.mp4"
    assert "Alice: Good morning[2J everyone" in (out / f"{stem}.txt").read_text(encoding="utf-8")
    index = write_index([index_entry(result, paths, name=Path(os.fsdecode(b"caf\xe9/x.mp4")))], out)
    assert "caf\ufffd/x.mp4" in index.read_text(encoding="utf-8")


def test_refuses_to_overwrite_the_recording(result, out):
    recording = out / "talk.json"
    recording.write_text("not really a recording")
    result["source"]["path"] = str(recording)
    with pytest.raises(OutputError, match="the recording itself"):
        write_outputs(result, out, "talk", ["json"])
    assert recording.read_text() == "not really a recording"


# -- atomic writes -------------------------------------------------------------------------


class ExplodingWriter(writers.TXTWriter):
    """Writes some lines, then fails half-way through, as a render bug would."""

    def render(self, result, path, *, media_dir):
        yield "[00:00] Alice: the first half\n" * 1000
        raise RuntimeError("render failed half-way")


def test_failed_render_leaves_the_old_file_and_no_temp_file(result, out):
    path = out / "standup.txt"
    path.write_text("old contents\n")
    with pytest.raises(RuntimeError, match="half-way"):
        ExplodingWriter().write(result, path)
    assert path.read_text() == "old contents\n"
    assert [p.name for p in out.iterdir()] == ["standup.txt"]


def test_failed_render_leaves_no_file_when_none_existed(result, out):
    with pytest.raises(RuntimeError):
        ExplodingWriter().write(result, out / "standup.txt")
    assert list(out.iterdir()) == []


def test_outputs_are_written_all_or_none(result, out, monkeypatch):
    """A full disk at the third of five outputs: the two written before it are not left new beside the old rest
    (a new X.html with an old X.json that a later batch would take for this run's)."""
    import errno

    write_outputs(result, out, "standup", ["html", "json", "srt", "vtt", "md"])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    edited = copy.deepcopy(result)
    edited["speakers"][0]["name"] = "Renamed Person"
    real = writers.SRTWriter.render

    def disk_full(self, result, path, *, media_dir):
        yield from real(self, result, path, media_dir=media_dir)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writers.SRTWriter, "render", disk_full)
    with pytest.raises(OutputError, match="No space left on device"):
        write_outputs(edited, out, "standup", ["html", "json", "srt", "vtt", "md"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # every output as it was, no temp file
    monkeypatch.setattr(writers.SRTWriter, "render", real)
    write_outputs(edited, out, "standup", ["html", "json", "srt", "vtt", "md"])
    assert all("Renamed Person" in (out / f"standup.{ext}").read_text() for ext in ("html", "json", "md"))


def test_an_interrupt_during_the_renames_leaves_whole_outputs_and_no_temporary_file(out, monkeypatch):
    """Ctrl-C between the renames of a group (microseconds) left a .part file: the outputs are each new or as they
    were, whole, and nothing else is left."""
    from mediapipe_g4 import atomic

    for name in ("x.json", "x.html"):
        (out / name).write_text("OLD")
    real, calls = os.replace, []

    def replace(a, b):
        calls.append(b)
        real(a, b)
        if len(calls) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_group():
            atomic.write_text(out / "x.json", "NEW")
            atomic.write_text(out / "x.html", "NEW")
    assert {p.name: p.read_text() for p in out.iterdir()} == {"x.json": "NEW", "x.html": "OLD"}


@pytest.mark.skipif(os.name == "nt", reason="file locks (fcntl.flock) are POSIX")
def test_outputs_waiting_for_their_group_stay_held(out, monkeypatch):
    """A sweep from another pid namespace (where the writer's pid is not running) took the temporary file of an
    output that waited, written, for its group's renames: the group then failed."""
    from mediapipe_g4 import atomic

    with atomic.atomic_group():
        atomic.write_text(out / "x.json", "NEW")
        monkeypatch.setattr(atomic, "process_running", lambda pid: False)
        atomic._SWEPT.discard(os.path.abspath(out))
        atomic.remove_stale_parts(out)
        atomic.write_text(out / "x.html", "NEW")
    assert sorted(p.name for p in out.iterdir()) == ["x.html", "x.json"]


def test_a_named_pipe_is_written_to_not_replaced(result, out):
    """`--rttm /dev/stdout` or a FIFO: renaming a temporary file over it would replace the pipe (or, as root,
    /dev/stdout itself) with a regular file that no one reads."""
    import os
    import threading

    from mediapipe_g4.atomic import write_text

    fifo = out / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    write_text(fifo, "SPEAKER x 1 0.0 1.0 <NA> <NA> S1 <NA> <NA>\n")
    reader.join(10)
    assert got == ["SPEAKER x 1 0.0 1.0 <NA> <NA> S1 <NA> <NA>\n"]
    assert fifo.is_fifo() and [p.name for p in out.iterdir()] == ["pipe"]


def test_template_error_becomes_output_error(result, out, monkeypatch):
    import jinja2

    env = templating.make_environment()
    env.loader = jinja2.DictLoader({"report.html.j2": "{{ a }}{{ no_such_thing.attr }}"})
    monkeypatch.setattr(writers, "get_template", env.get_template)
    path = out / "standup.html"
    path.write_text("old")
    with pytest.raises(OutputError, match="Cannot render standup.html"):
        get_writer("html").write(result, path)
    assert path.read_text() == "old" and [p.name for p in out.iterdir()] == ["standup.html"]


def test_unwritable_place_is_an_output_error(result, tmp_path):
    with pytest.raises(OutputError, match=r"Cannot write .*missing.*standup\.srt"):
        get_writer("srt").write(result, tmp_path / "missing" / "standup.srt")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="Cannot write"):
        write_outputs(result, blocker / "sub", "standup", ["txt"])


# -- subtitles and text --------------------------------------------------------------------

SRT_TIME = r"(\d\d):(\d\d):(\d\d),(\d\d\d)"
VTT_TIME = r"(\d\d):(\d\d):(\d\d)\.(\d\d\d)"


def parse_cues(text: str, time_pattern: str) -> list[tuple[float, float, list[str]]]:
    cues = []
    for block in text.strip().split("\n\n"):
        lines = block.split("\n")
        for i, line in enumerate(lines):
            m = re.fullmatch(f"{time_pattern} --> {time_pattern}", line)
            if m:
                g = [int(x) for x in m.groups()]
                start = g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000
                end = g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000
                cues.append((start, end, lines[i + 1 :]))
                break
    return cues


def assert_valid_timing(cues):
    assert cues
    previous_start, previous_end = -1.0, 0.0
    for start, end, lines in cues:
        assert end > start
        assert start > previous_start and start >= previous_end - 1e-9
        assert 1 <= len(lines) <= subtitles.MAX_LINES
        assert all(0 < len(line) <= subtitles.MAX_LINE for line in lines), lines
        previous_start, previous_end = start, end


def test_srt(result, out):
    text = render("srt", result, out / "x.srt")
    blocks = text.strip().split("\n\n")
    assert [b.split("\n")[0] for b in blocks] == [str(i) for i in range(1, len(blocks) + 1)]
    assert blocks[0].split("\n")[1] == "00:00:00,640 --> 00:00:04,528"
    cues = parse_cues(text, SRT_TIME)
    assert len(cues) == len(blocks)
    assert_valid_timing(cues)
    assert all(re.match(r"(Alice|Bob|Carol): ", c[2][0]) for c in cues)
    assert cues[0][2] == ["Alice: Good morning, everyone. Let's keep", "the stand-up short today."]
    # Every word of the transcript is there, in order.
    words = " ".join(" ".join(c[2]).split(": ", 1)[1] for c in cues).split()
    assert words == " ".join(s["text"] for s in result["segments"]).split()


def test_vtt(result, out):
    text = render("vtt", result, out / "x.vtt")
    assert text.startswith("WEBVTT\n\n")
    assert "-->" in text and "," not in text.split("\n")[2]
    cues = parse_cues(text, VTT_TIME)
    assert_valid_timing([(s, e, [re.sub(r"</?v[^>]*>", "", x) for x in lines]) for s, e, lines in cues])
    assert cues[0][2][0] == "<v Alice>Alice: Good morning, everyone. Let's keep"
    assert cues[0][2][-1].endswith("</v>")
    assert re.search(r"^00:00:07\.930 --> ", text, re.M)


def test_long_segment_becomes_several_cues_with_interpolated_times(result):
    long_text = " ".join(f"word{i:03d}" for i in range(60))
    result["segments"] = [{"start": 10.0, "end": 40.0, "speaker": "S2", "text": long_text}]
    cues = subtitle_cues(result)
    assert len(cues) >= 5
    assert cues[0].start == 10.0 and cues[-1].end == 40.0
    for a, b in zip(cues, cues[1:]):
        assert a.end == b.start  # contiguous: the segment's time shared out by characters
    durations = [c.end - c.start for c in cues]
    lengths = [len(c.text) for c in cues]
    for d, n in zip(durations, lengths):
        assert d == pytest.approx(30.0 * n / sum(lengths), abs=0.002)


def test_subtitle_timing_is_valid_for_messy_segments(out):
    messy = {
        "speakers": [{"id": "S1", "name": "A"}, {"id": "S2", "name": "B"}],
        "segments": [
            {"start": 5.0, "end": 4.0, "speaker": "S1", "text": "end before start"},
            {"start": 5.0, "end": 9.0, "speaker": "S2", "text": "same start, overlapping"},
            {"start": 6.0, "end": 6.0, "speaker": "S1", "text": "zero length inside the other"},
            {"start": 1.0, "end": 2.0, "speaker": None, "text": "out of order, no speaker"},
            {"start": 3.0, "end": 3.5, "speaker": "S9", "text": "   "},
            {"start": 3661.25, "end": 3662.0, "speaker": "S1", "text": "after an hour " + "x" * 90},
        ],
    }
    for name, pattern in (("srt", SRT_TIME), ("vtt", VTT_TIME)):
        text = render(name, messy, out / f"m.{name}")
        cues = parse_cues(text, pattern)
        assert_valid_timing([(s, e, [re.sub(r"</?v[^>]*>", "", x) for x in lines]) for s, e, lines in cues])
        assert "out of order, no speaker" in text.split("\n\n")[0 if name == "srt" else 1]
    assert "01:01:01,250 --> " in (out / "m.srt").read_text()


def test_an_interjection_shows_and_the_turn_it_cut_into_goes_on(out):
    """Two sides of a call talking at once: the "mm-hm" inside a long turn is shown whole, and the turn's cue shows
    again after it (it used to end at the "mm-hm", its words off screen until the next cue; and when the turn
    made several cues, the "mm-hm" was pushed past them as a 1 ms cue)."""
    call = {
        "speakers": [{"id": "S1", "name": "Dana"}, {"id": "S2", "name": "Mark"}],
        "segments": [
            {"start": 1.0, "end": 9.0, "speaker": "S1", "text": "did you install the latest update yesterday"},
            {"start": 4.0, "end": 4.6, "speaker": "S2", "text": "mm-hm"},
            {"start": 8.5, "end": 12.0, "speaker": "S2", "text": "yes and then it stopped"},
        ],
    }
    cues = [(c.start, c.end, c.speaker, c.text) for c in subtitle_cues(call)]
    assert cues == [(1.0, 4.0, "Dana", "did you install the latest update yesterday"), (4.0, 4.6, "Mark", "mm-hm"),
                    (4.6, 8.5, "Dana", "did you install the latest update yesterday"),
                    (8.5, 12.0, "Mark", "yes and then it stopped")]
    text = render("srt", call, out / "call.srt")
    assert_valid_timing(parse_cues(text, SRT_TIME))
    assert "00:00:04,000 --> 00:00:04,600\nMark: mm-hm" in text


def test_vtt_escapes_markup(result, out):
    text = render("vtt", hostile(result), out / "x.vtt")
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<v Alice scriptalert(1)\u2026>Alice &lt;script&gt;alert(1)&lt;\u2026: " in text  # the voice: the prefix's name
    assert "<b>" not in text


def test_srt_shows_markup_and_arrows_as_text(out):
    """SRT has no escapes: players apply `<i>`, `<font>` and ASS `{\\an8}` overrides from the text, and a line
    with `-->` reads as a timing line (ffmpeg drops it)."""
    said = {"speakers": [{"id": "S1", "name": "Ann <i>"}],
            "segments": [{"start": 1.0, "end": 5.0, "speaker": "S1",
                          "text": "set {\\an8}{\\fs120} x <font color=red>red</font> 00:00:05,000 ---> 00:00:59,000 "
                                  "a ----> b, 3 < 4 and x <-- y"}]}
    text = render("srt", said, out / "m.srt")
    body = "\n".join(line for _, _, lines in parse_cues(text, SRT_TIME) for line in lines)
    assert "-->" not in body and "{\\" not in body and not re.search(r"</?[A-Za-z]", body)
    assert "3 < 4 and x <-- y" in body.replace("\n", " ")
    # measured as shown, after the neutralising: no cue of three lines, no brace cut from its tag
    cues = parse_cues(text, SRT_TIME)
    assert all(len(lines) <= 2 and all(subtitles.columns(line) <= 42 for line in lines) for _, _, lines in cues)
    assert body.replace("\u2060", "").replace("\uff5b", "{").replace("Ann <i>: ", "").split() == (
        "set {\\an8}{\\fs120} x <font color=red>red</font> 00:00:05,000 -> 00:00:59,000 a -> b, "
        "3 < 4 and x <-- y").split()


def test_cues_fit_two_lines_of_42_columns():
    """Every cue is at most two lines of 42 columns, for any mix of word lengths and names (a cue's tail given
    back at a phrase end could make three lines beside the next word), and no word is lost."""
    rng = random.Random(7)
    vocabulary = ["ok?", "I", "it", "of", "be", "the?", "be.", "internationalization,", "on", "so", "infra",
                  "x" * 45, "plan", "we", "and"]
    for _ in range(3000):
        name = rng.choice(["", "Al", "Bartholomew Johnson", "Speaker 12", "N" * 30])
        text = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(1, 40)))
        prefix = subtitles.speaker_prefix(name)
        pieces = subtitles._split_words(prefix, text, subtitles.MAX_LINE, subtitles.MAX_LINES)
        for piece in pieces:
            lines = subtitles.wrap_cue(prefix, piece)
            assert 1 <= len(lines) <= 2 and all(subtitles.columns(line) <= 42 for line in lines), (name, text)
        assert "".join(" ".join(pieces).split()) == "".join(text.split())


def test_chinese_and_japanese_cues_count_wide_characters_twice_and_break_at_their_punctuation():
    text = ("我们今天先看一下支付服务的进展，昨天的部署失败了两次，原因是数据库迁移超时。"
            "鲍勃已经在测试环境里重试了三次，现在看起来是稳定的。下周我们会把它推到生产环境，然后再观察一周。")
    result = {"speakers": [{"id": "S1", "name": "王"}],
              "segments": [{"start": 0.0, "end": 20.0, "speaker": "S1", "text": text}]}
    cues = subtitle_cues(result)
    assert "".join(c.text for c in cues) == text  # no space put between characters
    for cue in cues:
        lines = subtitles.wrap_cue(subtitles.speaker_prefix(cue.speaker), cue.text)
        assert len(lines) <= 2 and all(subtitles.columns(line) <= 42 for line in lines), lines
        assert not any(line[0] in "，。、" for line in lines)  # a closing mark stays with its character
    assert all(c.text[-1] in "，。" for c in cues[:-1])  # cues end at a phrase, not mid-word
    assert subtitles.wrap_cue("", "日本語の字幕、テスト。" * 3) == ["日本語の字幕、テスト。日本語の字幕、テス",
                                                                  "ト。日本語の字幕、テスト。"]
    assert subtitles.wrap_cue("Bob: ", "hello 世界, and 더 많은 한국어") == ["Bob: hello 世界, and 더 많은 한국어"]
    # an opening mark stays with the character after it: no line ends with "「"
    lines = subtitles.wrap_cue("", "今日の議題はこちらです。田中さんが「新しい計画」を説明します。", 18)
    assert lines == ["今日の議題はこちら", "です。田中さんが", "「新しい計画」を説", "明します。"]


def test_txt(result, out):
    lines = render("txt", result, out / "x.txt").splitlines()
    assert lines[0] == "[00:00] Alice: Good morning, everyone. Let's keep the stand-up short today. Bob, can you start with the payment service?"
    assert lines[1].startswith("[00:07] Bob: Sure.")
    assert lines[-1] == "[01:00] Alice: Thanks, everyone. See you tomorrow."
    assert len(lines) == len(result["segments"])
    result["segments"].append({"start": 3725.9, "end": 3727, "speaker": "S3", "text": "Late\nline"})
    result["segments"].append({"start": 3730, "end": 3731, "speaker": None, "text": "Unknown"})
    lines = render("txt", result, out / "x.txt").splitlines()
    assert lines[-2:] == ["[1:02:05] Carol: Late line", "[1:02:10] Unknown"]


# -- json ----------------------------------------------------------------------------------


def test_json_round_trips(result, out):
    text = render("json", result, out / "x.json")
    assert json.loads(text) == result
    assert text.startswith('{\n  "source": {') and text.endswith("}\n")


def test_json_keyframe_paths_are_not_absolute(result, work, out):
    result["keyframes"][0]["image_path"] = str(work / "keyframes" / "00000000.jpg")
    result["keyframes"][1]["image_path"] = "/somewhere/else/cache/kf.jpg"
    data = json.loads(render("json", result, out / "x.json", media_dir=work))
    assert data["keyframes"][0]["image_path"] == "keyframes/00000000.jpg"
    assert "image_path" not in data["keyframes"][1] and data["keyframes"][1]["time"] == 14.0
    assert data["keyframes"][2]["image_path"] == "keyframes/00031000.jpg"
    assert result["keyframes"][1]["image_path"] == "/somewhere/else/cache/kf.jpg"  # input untouched


def test_json_accepts_paths_and_tuples(result, out):
    result["source"]["path"] = Path("/recordings/standup.mp4")
    result["segments"] = tuple(result["segments"])
    data = json.loads(render("json", result, out / "x.json"))
    assert data["source"]["path"] == "/recordings/standup.mp4" and isinstance(data["segments"], list)


# -- the HTML report -----------------------------------------------------------------------


def test_html_report_is_complete_and_self_contained(result, work, out):
    html = render("html", result, out / "standup.html", media_dir=work)
    text = visible_text(html)
    for heading in ("Summary", "Decisions", "Action items", "Open questions", "Chapters", "Who spoke when", "Slides", "Transcript"):
        assert f"<h2>{heading}" in html
    assert "<title>standup – meeting notes</title>" in html
    assert "Alice 49% · 28 s" in text and "Bob 27% · 15 s" in text and "Carol 25% · 14 s" in text
    assert "1 min 04 s · 3 speakers · 4 slides" in text
    assert "Ship the payment retry feature next Tuesday." in text
    assert "Send the mobile release notes to the support team. Carol Due Friday 0:42" in text
    assert "Unassigned Due Monday 0:52" in text  # owner null
    assert "Write the integration tests for the payment retry logic. Bob 0:07" in text  # owner given as an id
    assert "Who owns the on-call rotation next month? 0:52" in text
    assert "0:28 Mobile release" in text
    assert text.count("data:image/jpeg;base64,") == 0  # images are attributes, not text
    assert len(re.findall(r'<img src="data:image/jpeg;base64,[A-Za-z0-9+/=]+"', html)) == 4
    assert "0:07 Bob Sure. Yesterday I finished the retry logic" in text
    assert "google/gemma-4-12B-it" in text and "google/gemma-4-E4B-it" in text and "bfloat16" in text
    assert "transcribe 6.9 s" in text and "language en" in text
    # Self-contained: no external resources, no script without a recording to play.
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    assert "<link" not in html and "@import" not in html and "url(" not in html
    assert "<script" not in html and "default-src 'none'" in html
    assert "@media print" in html and "max-width: 40rem" in html
    # Speaker timeline blocks are positioned by time.
    assert re.search(r'class="tl-block" style="left:1\.0\d*%;width:\d+\.\d+%"', html)
    # Times are plain when the recording is not beside the report.
    assert "#t=" not in html and "<video" not in html and "<audio" not in html


def test_html_links_times_when_the_recording_is_beside(result, work, out):
    result["source"]["name"] = "stand up #1.mp4"
    (out / "stand up #1.mp4").write_bytes(b"\x00")
    html = render("html", result, out / "stand up #1.html", media_dir=work)
    assert '<video id="player" controls preload="metadata" playsinline src="stand%20up%20%231.mp4">' in html
    # What a screen reader says is what the link does; what is shown stays the time.
    assert ('<a class="t" href="stand%20up%20%231.mp4#t=46.4" data-t="46.4" aria-label="Play from 0:46">0:46</a>'
            in html)
    links = re.findall(r'<a class="t" [^>]*>([^<]*)</a>', html)
    assert len(links) > 20 and len(links) == html.count('aria-label="Play from ')
    assert all(f'aria-label="Play from {shown}">{shown}</a>' in html for shown in links)
    assert "<script>" in html and report_view.PLAYER_SCRIPT_HASH in html
    md = render("md", result, out / "stand up #1.md", media_dir=work)
    assert "[0:46](stand%20up%20%231.mp4#t=46.4)" in md


def test_audio_recording_gets_an_audio_player(result, out):
    result["source"]["name"] = "call.m4a"
    result["keyframes"] = []
    (out / "call.m4a").write_bytes(b"\x00")
    html = render("html", result, out / "call.html")
    assert '<audio id="player"' in html and "<video" not in html
    assert "Slides" not in visible_text(html)


def test_speakers_found_side_by_side_say_on_which_side(result, out):
    speakers = result["speakers"][:2]
    result["speakers"] = [{**speakers[0], "side": 1}, {**speakers[1], "side": 2}]
    names = [s["name"] for s in speakers]
    html = visible_text(render("html", result, out / "call.html"))
    assert f"{names[0]} left channel ·" in html and f"{names[1]} right channel ·" in html
    assert f"{names[0]} (left channel, " in render("md", result, out / "call.md")
    result["options"]["audio_track"] = "all"
    assert f"{names[1]} track 2 ·" in visible_text(render("html", result, out / "call.html"))
    del result["speakers"][0]["side"], result["speakers"][1]["side"]
    assert f"{names[0]} left" not in visible_text(render("html", result, out / "call.html"))


def test_html_escapes_recording_text(result, work, out):
    evil = hostile(result)
    evil["source"]["name"] = 'stand "<img src=x>.mp4'
    (out / evil["source"]["name"]).write_bytes(b"\x00")
    html = render("html", evil, out / "x.html", media_dir=work)
    assert "<script>alert" not in html and "<img src=x" not in html and "<b>bold" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Bob &#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in html  # also inside title="..." attributes
    assert 'title="Bob &#34;&gt;' in html
    assert "Mallory &lt;script&gt;" in html  # an owner that is no speaker
    assert 'src="stand%20%22%3Cimg%20src%3Dx%3E.mp4"' in html  # the link to the recording
    assert "<title>stand &#34;&lt;img src=x&gt; – meeting notes</title>" in html
    assert html.count("<script>") == 1  # the player script only


def test_markdown_neutralizes_markup(result, work, out):
    md = render("md", hostile(result), out / "x.md", media_dir=work)
    body = md.split("\n[slide-1]: ")[0]
    assert "<script" not in md and "<b>" not in md and "<img" not in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert not re.search(r"(?<!\\)\]\(", body)  # no unescaped "](": no link can start
    assert "\\[click me\\](javascript:alert(1))" in md
    assert "![img](http" not in md
    assert "\n# Heading?" not in md and "\\# Heading?" in md
    assert "**Bob \"&gt;&lt;img src=x onerror=alert(1)&gt;:** \\# not a heading - not a list \\| nor \\| a table \\`code\\` \\*em\\* \\_em\\_" in md
    assert md.startswith("# stand &lt;script&gt;alert(1)&lt;/script&gt; – meeting notes\n")
    # The only links and images are the report's own.
    assert re.findall(r"!\[[^\]]*\]\[(slide-\d)\]", md) == ["slide-1", "slide-2", "slide-3", "slide-4"]


def test_markdown_report(result, work, out):
    md = render("md", result, out / "standup.md", media_dir=work)
    assert md.startswith("# standup – meeting notes\n\n1 min 04 s · 3 speakers · 4 slides\n\n**Speakers:** Alice (49%, 28 s)")
    for heading in ("## Summary", "## Decisions", "## Action items", "## Open questions", "## Chapters", "## Slides", "## Transcript"):
        assert f"\n{heading}\n" in md
    assert "\n1. Ship the payment retry feature next Tuesday. (0:28)\n" in md
    assert "- [ ] Send the mobile release notes to the support team. — **Carol**, due Friday (0:42)" in md
    assert "- [ ] Decide who owns the on-call rotation next month. — *unassigned*, due Monday (0:52)" in md
    assert "\n### 0:28 · Mobile release\n" in md
    assert "\n0:51 **Bob:** Will do, Alice.\n" in md
    assert len(re.findall(r"^\[slide-\d\]: data:image/jpeg;base64,\S+$", md, re.M)) == 4
    assert "\n\n\n\n" not in md


@pytest.mark.parametrize(
    ("notes", "reason"),
    [
        (None, "this recording was only transcribed (notes were not requested)"),
        ({"status": "failed", "error": "the model ran out of GPU memory (CUDA OOM)", "summary": ""}, "the model ran out of GPU memory (CUDA OOM)"),
        ({"status": "skipped", "error": "--no-notes was given"}, "--no-notes was given"),
        ({"status": "failed", "error": None}, "the notes step failed without a message"),
    ],
)
def test_reports_without_notes_say_why_and_keep_the_rest(result, work, out, notes, reason):
    if notes is None:
        del result["notes"]
    else:
        result["notes"] = notes
    html = render("html", result, out / "standup.html", media_dir=work)
    text = visible_text(html)
    assert f"Meeting notes were not produced: {reason}" in text.replace("&#39;", "'")
    assert "<title>standup – transcript</title>" in html
    assert "<h2>Decisions" not in html and "<h2>Action items" not in html
    assert "<h2>Who spoke when" in html and "<h2>Slides" in html and "<h2>Transcript" in html
    assert "The speakers, slides and full transcript below are complete." in text
    assert "Alice 49% · 28 s" in text and "See you tomorrow." in text
    assert len(re.findall(r'<img src="data:image/jpeg', html)) == 4
    md = render("md", result, out / "standup.md", media_dir=work)
    assert "> Meeting notes were not produced: " in md
    assert "## Transcript" in md and "See you tomorrow." in md and "## Slides" in md
    assert "## Decisions" not in md


@pytest.mark.parametrize(("speakers", "slides", "warning", "said"), [
    (True, True, False, "The speakers, slides and full transcript below are complete."),
    (True, False, False, "The speakers and full transcript below are complete."),
    (False, False, False, "The full transcript below is complete."),
    (False, True, True, "The slides and transcript below cover the audio that decoded."),
    (False, False, True, "The transcript below covers the audio that decoded."),
])
def test_without_notes_the_report_says_what_is_below(result, out, speakers, slides, warning, said):
    """The sentence under 'Meeting notes were not produced' names only what the report has: it spoke of speakers
    and a full transcript below when nothing was transcribed, or no speaker was told apart."""
    del result["notes"]
    if not speakers:
        result["speakers"] = []
        for seg in result["segments"]:
            seg["speaker"] = None
    if not slides:
        result["keyframes"] = []
    if warning:
        result["source"]["warning"] = "the file is cut off after 0:40"
    assert said in visible_text(render("html", result, out / "x.html"))
    assert f"> {said}" in render("md", result, out / "x.md")
    result["segments"] = []
    assert "below" not in visible_text(render("html", result, out / "x.html"))
    assert "below" not in render("md", result, out / "x.md")


def test_a_transcript_asked_for_says_nothing_of_missing_notes(result, work, out):
    """`transcribe` writes the page too (the design's outputs); a notice that notes were not produced, on a page of
    a command that makes none, read as a failure."""
    result["notes"] = {"status": "skipped", "error": "notes were not asked for (g4media transcribe)"}
    result["options"] = {**(result.get("options") or {}), "summarize": False}
    html = render("html", result, out / "standup.html", media_dir=work)
    assert "not produced" not in html and 'id="summary"' not in html
    assert "<title>standup – transcript</title>" in html and "See you tomorrow." in visible_text(html)
    md = render("md", result, out / "standup.md", media_dir=work)
    assert "not produced" not in md and "## Transcript" in md


def test_report_survives_a_minimal_result(out):
    minimal = {"source": {"path": "/x/clip.wav", "name": "clip.wav", "duration": 0}, "segments": []}
    html = render("html", minimal, out / "clip.html")
    assert "Nothing was transcribed." in html and "Meeting notes were not produced" in html
    assert "below" not in visible_text(html)  # no speakers or transcript below to call complete
    md = render("md", minimal, out / "clip.md")
    assert "Nothing was transcribed." in md and "below" not in md
    assert "> Meeting notes were not produced: this recording was only transcribed (notes were not requested)\n\n" in md
    for name in ("srt", "vtt", "txt", "json"):
        render(name, minimal, out / f"clip.{name}")


def test_report_with_missing_keyframe_image_still_renders(result, out, caplog):
    html = render("html", result, out / "x.html", media_dir=out / "nowhere")
    assert html.count("image not available") == 4
    assert "cannot embed keyframe" in caplog.text


def test_speakers_only_in_segments_are_shown(result, work, out):
    result["segments"].append({"start": 62.0, "end": 63.5, "speaker": "S4", "text": "Sorry I'm late."})
    text = visible_text(render("html", result, out / "x.html", media_dir=work))
    assert "S4 Sorry I&#39;m late." in text and "4 speakers" in text


# -- templating ----------------------------------------------------------------------------


def test_template_dir_and_environment():
    folder = templating.template_dir()
    for name in ("report.html.j2", "report.md.j2", "index.html.j2"):
        assert (folder / name).is_file()
    env = templating.make_environment()
    assert env.autoescape is True
    assert env.from_string("{{ x }}").render(x=XSS) == "&lt;script&gt;alert(1)&lt;/script&gt;"
    with pytest.raises(Exception, match="undefined"):
        env.from_string("{{ missing }}").render()
    for name in ("mmss", "duration", "speaker_name", "datauri"):
        assert name in env.filters


@pytest.mark.parametrize(
    ("seconds", "mmss", "duration"),
    [(0, "0:00", "0 s"), (5.99, "0:05", "6 s"), (65.5, "1:05", "1 min 06 s"), (3599.9, "59:59", "1 h 00 min"),
     (3725, "1:02:05", "1 h 02 min"), (None, "", ""), (-3, "0:00", "0 s"), (0.3, "0:00", "0.3 s")],
)
def test_time_filters(seconds, mmss, duration):
    assert templating.mmss(seconds) == mmss
    assert templating.duration(seconds) == duration


def test_speaker_name_filter(result):
    env = templating.make_environment()
    template = env.from_string("{{ 'S2'|speaker_name }} {{ 'S9'|speaker_name }} {{ 'S1'|speaker_name(other) }}")
    assert template.render(speakers=result["speakers"], other={"S1": "Ann"}) == "Bob S9 Ann"


def test_datauri_filter(tmp_path):
    png = tmp_path / "big.png"
    Image.new("RGB", (2000, 1000), (10, 200, 30)).save(png)
    uri = templating.datauri(png, max_width=500)
    assert uri.startswith("data:image/jpeg;base64,")
    import base64
    import io

    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as image:
        assert image.format == "JPEG" and image.size == (500, 250)
    small = tmp_path / "small.jpg"
    Image.new("RGB", (64, 36)).save(small)
    assert templating.datauri(small) == "data:image/jpeg;base64," + base64.b64encode(small.read_bytes()).decode()
    assert templating.datauri(tmp_path / "missing.jpg") == ""
    assert templating.datauri("") == ""


# -- batch index ---------------------------------------------------------------------------


def test_index_lists_outputs_and_failures(result, work, tmp_path):
    out = tmp_path / "batch out"
    result["source"]["name"] = 'Weekly "sync" <b>#3.mp4'
    paths = write_outputs(result, out, output_stem(result["source"]["name"]), ["html", "md", "json"], media_dir=work)
    entries = [
        index_entry(result, paths),
        failed_entry(Path("rec/broken clip.mp4"), "FFmpeg cannot read broken clip.mp4: moov atom not found"),
        failed_entry("evil <img src=x onerror=alert(1)>.wav", XSS),
    ]
    index = write_index(entries, out, title="Recordings in batch")
    html = index.read_text(encoding="utf-8")
    assert index == out / "index.html"
    assert "Weekly &#34;sync&#34; &lt;b&gt;#3.mp4" in html
    assert 'href="Weekly%20_sync_%20_b_%233.html"' in html
    assert '>MD</a>' in html and '>JSON</a>' in html and '>HTML</a>' in html
    assert "Failed: FFmpeg cannot read broken clip.mp4: moov atom not found" in html
    assert "<h2>rec/broken clip.mp4</h2>" in html  # its path in the batch folder
    assert "<script>" not in html and "<img" not in html and "evil &lt;img src=x onerror=alert(1)&gt;.wav" in html
    assert "3 recordings: 1 done, " in html and "2 failed" in html
    assert "Alice, Bob, Carol" in html and "Short daily stand-up." in html
    assert "http" not in html.replace("http-equiv", "")
    assert "Note:" not in html

    result["source"]["warning"] = "only the first 00:20 of the 01:03 of audio the file states could be <decoded>"
    html = write_index([index_entry(result, paths)], out).read_text(encoding="utf-8")
    assert "Note: only the first 00:20 of the 01:03 of audio the file states could be &lt;decoded&gt;." in html


def test_markdown_renders_to_safe_html(result, work, out):
    """Through a real CommonMark renderer, hostile text yields no tags, links or images of its own."""
    markdown_it = pytest.importorskip("markdown_it")
    md = render("md", hostile(result), out / "x.md", media_dir=work)
    html = markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(md)
    assert "<script" not in html and "javascript:" not in html.replace("(javascript:alert(1))", "")
    assert re.findall(r"<img [^>]*>", html) == re.findall(r'<img src="data:image/jpeg;base64,[^"]+" alt="Slide \d" />', html)
    assert len(re.findall(r"<img ", html)) == 4
    assert re.findall(r"<a [^>]*>", html) == []
    assert html.count("<h1>") == 1 and "<table" not in html and "<em>" in html  # only the template's own emphasis
    assert html.count("<em>") == html.count("<em>unassigned</em>") + html.count("<em>Slide ") + html.count("<em>Made by") + html.count("<em>Options other than the defaults:")


def test_markdown_addresses_said_are_not_links(result, work, out):
    """GitHub and GitLab link bare addresses in Markdown: one said in the meeting stays text (escaped)."""
    result["segments"][0]["text"] = "See https://evil.example/x and www.evil.example, ratio 3:1 at 10:30."
    md = render("md", result, out / "x.md", media_dir=work)
    assert "https://evil" not in md and "www.evil" not in md
    assert "See https\\://evil.example/x and www\\.evil.example, ratio 3:1 at 10:30." in md


def test_very_long_unicode_name(result, out):
    stem = output_stem("会议纪要" * 60 + ".mp4")
    paths = write_outputs(result, out, stem, ["txt", "srt"])
    assert all(len(p.name.encode()) <= 255 and p.parent == out for p in paths)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)


def test_the_footer_shows_the_options_that_are_not_the_defaults(result, tmp_path):
    from mediapipe_g4.diarize import DiarizationOptions
    from mediapipe_g4.pipeline import RunOptions
    from mediapipe_g4.planner import PlanOptions

    made = RunOptions(plan=PlanOptions(vocabulary=("Priya Raman", "OKR")), diarization=DiarizationOptions(num_speakers=3),
                      names=(("S1", "Dana"),))
    result["options"] = json.loads(json.dumps(made.to_dict()))  # as X.json holds them
    footer = visible_text(render("html", result, tmp_path / "x.html")).split("Options other than the defaults")[1]
    assert "plan.vocabulary Priya Raman, OKR" in footer and "diarization.num_speakers 3" in footer
    assert "names.S1 Dana" in footer and "max_clip" not in footer and "diarization.window" not in footer
    assert "plan.vocabulary Priya Raman, OKR" in render("md", result, tmp_path / "x.md")
    result["options"] = json.loads(json.dumps(RunOptions().to_dict()))
    assert "Options other than" not in render("html", result, tmp_path / "x.html")
    # what the command sets, not the user: every transcript said "summarize no"
    result["options"] = json.loads(json.dumps(RunOptions(summarize=False, slides=False, fresh=True).to_dict()))
    assert "Options other than" not in render("html", result, tmp_path / "x.html")


def test_a_keyframe_outside_the_work_folder_is_not_embedded(result, work, out, tmp_path, caplog):
    """An X.json edited or shared by someone else must not pull another file of this machine into the report."""
    elsewhere = tmp_path / "private.jpg"
    inside = work / result["keyframes"][0]["image_path"]
    elsewhere.write_bytes(inside.read_bytes())  # a picture that would embed fine
    result["keyframes"][0]["image_path"] = str(elsewhere)
    result["keyframes"][1]["image_path"] = "../private.jpg"
    with caplog.at_level("WARNING", logger="mediapipe_g4"):
        html = render("html", result, out / "x.html", media_dir=work)
        render("md", result, out / "x.md", media_dir=work)
    assert html.count("data:image/jpeg;base64,") == len(result["keyframes"]) - 2
    assert caplog.text.count(f"not embedding {elsewhere}:") == 1  # said once, not once per report
    assert "Slide 1" in html and "Slide 2" in html
    # An X.json naming / as its work folder still embeds only pictures in a keyframes folder.
    secret = tmp_path / "secret.png"
    secret.write_bytes(inside.read_bytes())
    result["keyframes"][0]["image_path"] = str(secret)
    for kf in result["keyframes"][2:]:
        kf["image_path"] = str(work / kf["image_path"])  # real keyframes, named absolutely
    html = render("html", result, out / "x.html", media_dir=Path("/"))
    assert html.count("data:image/jpeg;base64,") == len(result["keyframes"]) - 2


def test_the_footer_says_where_the_model_ran(result, out):
    page = visible_text(render("html", result, out / "x.html"))
    assert "entirely on this machine: nothing from the recording was sent anywhere" in page
    result["options"] = {"server": "http://gpu-box:8000/v1?key=***"}
    page = visible_text(render("html", result, out / "x.html"))
    assert "nothing from the recording was sent anywhere" not in page
    assert "with the model server at http://gpu-box:8000/v1?key=***: the recording's clips" in page
    assert "with the model server at http\\://gpu-box:8000/v1" in render("md", result, out / "x.md")  # shows as http://


def test_right_to_left_text_gets_its_own_direction(result, out):
    result["notes"]["summary"] = "ناقش الفريق الإصدار."
    result["notes"]["decisions"][0] = {"text": "الشحن يوم الثلاثاء.", "time": 1.0}
    html = render("html", result, out / "x.html")
    assert '<p dir="auto">ناقش الفريق الإصدار.</p>' in html
    assert "<li><bdi>الشحن يوم الثلاثاء.</bdi>" in html  # the period stays with its sentence, not the time
    assert html.count('<p dir="auto"') >= len(result["segments"])


def test_a_speaker_name_cannot_break_a_subtitle_file(result, out):
    result["speakers"][0]["name"] = "Ann --> Bea\n\nLee"
    srt = render("srt", result, out / "x.srt")
    vtt = render("vtt", result, out / "x.vtt")
    txt = render("txt", result, out / "x.txt")
    assert srt.count("-->") == srt.count("\n\n") and "Ann -> Bea Lee: " in srt  # one arrow per cue, its time's
    assert "<v Ann -- Bea Lee>" in vtt and "\n\nLee" not in vtt
    assert all(line.startswith("[") for line in txt.splitlines())


@pytest.mark.parametrize("duration", [59.0, 600.0, 3600.0, 4200.0, 7200.0, 10_800.0, 36_000.0])
def test_time_axis_ticks_a_narrow_screen_shows_keep_two_steps_apart(duration):
    """Every other mark is minor (a phone hides its label); the last is never minor, and the labels left keep at least
    two steps apart, the last (which ends at its mark, a whole label's width back) included."""
    ticks = report_view._ticks(duration)
    assert ticks[0]["time"] == 0 and not ticks[0]["minor"] and not ticks[-1]["minor"]
    assert len(ticks) <= 9
    step = ticks[1]["time"]
    shown = [t["time"] for t in ticks if not t["minor"]]
    assert all(b - a >= 2 * step for a, b in zip(shown, shown[1:])), shown
    assert len(shown) >= min(len(ticks), 3)


def test_sixteen_speakers_wear_sixteen_colours(result, out):
    """The palette had eight colours, taken in turn: a meeting's ninth speaker wore the first one's, in the legend,
    the timeline, the action items and the transcript. Sixteen now differ clearly (CIE76 distance 15 or more), and
    past them each colour is still new, readable on white, and the same each time."""
    def lab(hex_colour: str) -> tuple[float, float, float]:
        lin = [(c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4)
               for c in (int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5))]
        xyz = [sum(w * c for w, c in zip(row, lin)) / n for row, n in (
            ((0.4124, 0.3576, 0.1805), 0.95047), ((0.2126, 0.7152, 0.0722), 1.0), ((0.0193, 0.1192, 0.9505), 1.08883))]
        f = [t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116 for t in xyz]
        return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])

    colours = [report_view.speaker_color(i) for i in range(40)]
    assert colours == [report_view.speaker_color(i) for i in range(40)]
    assert len(set(colours)) == 40 and all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colours)
    first = [lab(c) for c in colours[:16]]
    assert min(math.dist(a, b) for a, b in itertools.combinations(first, 2)) >= 15
    for colour in colours:
        assert report_view._contrast_on_white(tuple(int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5))) >= 4.5, colour

    result["speakers"] = [{"id": f"S{i}", "name": f"Person {i}"} for i in range(1, 17)]
    result["segments"] = [{"start": i, "end": i + 1, "speaker": f"S{i}", "text": f"I am {i}."} for i in range(1, 17)]
    result["notes"]["action_items"] = [{"text": "Write it up.", "owner": "S9"}]
    html = render("html", result, out / "many.html", media_dir=None)
    legend = re.findall(r'<li><span class="chip" style="--c:(#[0-9a-f]{6})">', html)
    assert legend == colours[:16]
    assert f'<span class="owner"><span class="chip" style="--c:{colours[8]}">' in html and colours[8] != colours[0]
    assert f'<div class="tl-track" style="--c:{colours[8]}">' in html


def test_speaker_colours_and_faint_text_are_readable_on_white():
    """WCAG AA: 4.5:1 for text (speaker names are written in their colour; --faint is used for text too)."""
    def luminance(hex_colour: str) -> float:
        channels = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    template = (Path(__file__).parent.parent / "templates" / "report.html.j2").read_text()
    faint = re.search(r"--faint: (#[0-9a-f]{6})", template).group(1)
    for colour in (*report_view.PALETTE, faint):
        assert 1.05 / (luminance(colour) + 0.05) >= 4.5, colour


# -- accessibility: captions, language, text alternatives -----------------------------------


def track_vtt(html: str) -> str:
    """The WebVTT text of the player's captions track (a base64 data: URI)."""
    track = re.search(r'<track kind="captions" default label="Transcript"(?: srclang="[^"]+")? '
                      r'src="data:text/vtt;base64,([A-Za-z0-9+/=]+)">', html)
    assert track, "no captions track"
    return base64.b64decode(track.group(1), validate=True).decode("utf-8")


def test_the_player_has_captions_of_the_transcript(result, out):
    (out / "standup.mp4").write_bytes(b"\x00")
    html = render("html", result, out / "standup.html")
    # The X.vtt file's very text (one WebVTT writer), speaker-prefixed, inside the player.
    assert track_vtt(html) == render("vtt", result, out / "standup.vtt")
    assert re.search(r'<video id="player"[^>]*><track [^>]*></video>', html)
    # The page allows data: media for it, and nothing else new.
    csp = re.search(r'Content-Security-Policy" content="([^"]+)"', html).group(1)
    assert "media-src * data:;" in csp and "default-src 'none'" in csp and csp.count("data:") == 2  # img-src too

    result["source"]["name"] = "call.m4a"
    (out / "call.m4a").write_bytes(b"\x00")
    html = render("html", result, out / "call.html")
    assert re.search(r'<audio id="player"[^>]*><track [^>]*></audio>', html) and track_vtt(html).startswith("WEBVTT")


def test_no_captions_without_a_player_or_a_transcript(result, out):
    html = render("html", result, out / "standup.html")  # the recording is not beside the report
    assert "<track" not in html and "media-src" not in html
    (out / "standup.mp4").write_bytes(b"\x00")
    result["segments"] = []
    html = render("html", result, out / "standup.html")
    assert "<video" in html and "<track" not in html and "media-src *;" in html


def test_recording_text_cannot_break_the_captions_track(result, out):
    evil = copy.deepcopy(result)
    evil["speakers"][0]["name"] = 'Al"ice</track><script>alert(1)</script>'
    evil["segments"][1]["text"] = "Fine --> </video></track><script>alert(2)</script> \"quoted\" 'single' &amp;"
    evil["segments"][2]["text"] = "line one\n\n00:00:01.000 --> 00:00:02.000\nNOTE injected cue"
    (out / "standup.mp4").write_bytes(b"\x00")
    html = render("html", evil, out / "standup.html")
    assert html.count("<script") == 1 and "alert(" not in html.split("<script>")[1]  # the player script only
    assert html.count("<track ") == 1 and "</track>" not in html
    vtt = track_vtt(html)
    assert vtt == render("vtt", evil, out / "standup.vtt")
    # As many cues as subtitle_cues made: nothing said started a cue of its own or ended one early.
    assert vtt.count(" --> ") == len(subtitle_cues(evil))
    assert "<v Al\"ice/trackscripta\u2026>Al\"ice&lt;/track&gt;&lt;script&gt;a\u2026: " in vtt
    assert "Fine --&gt; &lt;/video&gt;" in " ".join(vtt.split()) and "</video>" not in vtt
    assert "\n\n00:00:01.000" not in vtt


@pytest.mark.parametrize(("given", "tag"), [
    ("English", "en"), ("german", "de"), (" Deutsch ", "de"), ("Japanese", "ja"), ("Français", "fr"),
    ("en", "en"), ("de-at", "de-AT"), ("pt_br", "pt-BR"), ("zh-hant-tw", "zh-Hant-TW"), ("es-419", "es-419"),
    ("Klingon", None), ("English (US)", None), ("", None), (None, None), (XSS, None), ('de" onmouseover="x', None),
])
def test_language_tag(given, tag):
    assert report_view.language_tag(given) == tag


def test_the_recordings_words_carry_its_language(result, out):
    del result["options"]["language"]
    result["options"]["plan"] = {"language": "German", "translate_to": None}
    (out / "standup.mp4").write_bytes(b"\x00")
    html = render("html", result, out / "standup.html")
    assert '<html lang="en">' in html  # the page's own words
    segments = len(result["segments"])
    assert html.count('<p dir="auto" lang="de">') == segments  # every transcript segment
    assert '<bdi lang="de">Alice</bdi>' in html and '<div class="seg-who" dir="auto" lang="de">Alice</div>' in html
    assert '<span class="owner"><span class="chip" style="--c:#398254"></span><bdi lang="de">Carol</bdi>' in html
    assert 'srclang="de"' in html
    # Notes made before their prompts named a language (no notes_language) are in a language no one fixed: not marked.
    assert '<p dir="auto">Send the mobile release notes to the support team.</p>' in html
    assert '<span class="tl-label" dir="auto" lang="de" title="Alice">Alice</span>' in html
    marked = (html.count('<p dir="auto" lang="de">') + html.count('<bdi lang="de">')
              + html.count('seg-who" dir="auto" lang') + html.count('tl-label" dir="auto" lang'))
    assert html.count(' lang="') == 1 + marked and html.count('lang="de"') == marked + 1  # and srclang

    # A translation's words are in the language it was translated into; the names are still the speech's.
    result["options"]["plan"]["translate_to"] = "English"
    html = render("html", result, out / "standup.html")
    assert html.count('<p dir="auto" lang="en">') == segments and '<bdi lang="de">Alice</bdi>' in html
    assert 'srclang="en"' in html

    # Unknown: no lang at all, never a wrong one. Older results keep the language at the top of options.
    result["options"] = {"language": "Klingon"}
    html = render("html", result, out / "standup.html")
    assert html.count("lang=") == 1 and "srclang" not in html
    result["options"] = {"language": "pt-br"}
    assert render("html", result, out / "standup.html").count('<p dir="auto" lang="pt-BR">') == segments


def test_notes_carry_the_language_they_were_asked_for(result, out):
    result["options"]["plan"] = {"language": "German", "translate_to": None, "notes_language": "English"}
    html = render("html", result, out / "standup.html")
    notes = result["notes"]
    assert '<div lang="en"><p dir="auto">Short daily stand-up.' in html  # the summary
    assert all(f'<bdi lang="en">{d["text"]}</bdi>' in html for d in notes["decisions"])
    assert all(f'<p dir="auto" lang="en">{a["text"]}</p>' in html for a in notes["action_items"])
    assert all(f'<bdi lang="en">{q["text"]}</bdi>' in html for q in notes["questions"])
    assert html.count('<span dir="auto" lang="en">') == 2 * len(notes["chapters"])  # the list and the transcript's
    assert '<bdi lang="en">Friday</bdi>' in html  # a due date, as the notes say it
    assert '<h2>Decisions <span class="count">' in html  # the page's own words keep the page's language
    result["options"]["plan"]["notes_language"] = "Deutsch"
    assert '<div lang="de"><p dir="auto">' in render("html", result, out / "standup.html")


def test_each_timeline_row_says_what_it_shows(result, out):
    result["speakers"].append({"id": "S4", "name": "Dan <b>", "talk_time": 0})
    html = render("html", result, out / "standup.html")
    rows = re.findall(r'<div class="tl-row" role="img" aria-label="([^"]*)">', html)
    assert rows == [
        "Alice: 7 turns, 28 s of speech, from 0:00 to 1:03",
        "Bob: 4 turns, 15 s of speech, from 0:07 to 0:52",
        "Carol: 4 turns, 14 s of speech, from 0:21 to 0:59",
        "Dan &lt;b&gt;: no speech in the transcript",
    ]
    assert html.count('class="tl-row"') == 4  # the slides row is links, the time axis is hidden
    # The slides row's links say which slide and when, not just "1", "2".
    slides = re.findall(r'<a class="tl-slide"[^>]* aria-label="([^"]*)"><span class="n\d">(\d+)</span></a>', html)
    assert [label for label, _ in slides] == ["Slide 1 at 0:00", "Slide 2 at 0:14", "Slide 3 at 0:31",
                                               "Slide 4 at 0:50"]


def test_long_meetings_small_speakers_and_right_to_left_names_read_right(result, out):
    """Times past the first hour (h:mm:ss) spilled out of a phone's time column onto the speaker's bar; one who spoke
    0.3 s of a meeting showed "0%" or "0 s", as if silent; in the Markdown, "(49%, 28 s)" after an Arabic name
    showed as "(28 ,%49 s)"."""
    assert '<main class="page">' in render("html", result, out / "short.html")
    long = copy.deepcopy(result)
    long["source"]["duration"] = 2 * 3600.0
    long["segments"].append({"start": 3700.0, "end": 3700.2, "speaker": "S9", "text": "Yes."})
    long["speakers"].append({"id": "S9", "name": "عبد الرحمن", "talk_time": 0.2})  # 0.3 % of the talk
    html = render("html", long, out / "long.html")
    assert '<main class="page hours">' in html and ".hours .seg {" in html
    assert "0.3% · 0.2 s" in visible_text(html)
    md = render("md", long, out / "long.md")
    assert "\u2068عبد الرحمن\u2069 (0.3%, 0.2 s)" in md
    assert md.count("\u2068") == md.count("\u2069") == 2  # the name, in the speakers and the transcript: no more
