"""The HTML report in a real browser: headless Chromium loads it with no console errors and no
network requests (everything is inline or a data: URI), and leaves screenshots for a person to see
in tests/artifacts/ (report.png, report-phone.png, report-print.png, report-notes-failed.png)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from mediapipe_g4.writers import get_writer

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "standup_result.json"
ARTIFACTS = Path(__file__).parent / "artifacts"
SAMPLE_VIDEO = ROOT / "samples" / "standup.mp4"

if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
    pytest.skip(
        "headless Chromium is not installed (needs /usr/bin/chromium and /usr/bin/chromedriver; "
        "on Debian: apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[test])")

SLIDE_TITLES = ["Daily Stand-up", "Payment Service", "Mobile Release", "Action Items"]


def make_keyframes(result: dict, work: Path) -> None:
    """Small slide-like JPEGs where the fixture's keyframes say they are."""
    for number, (kf, title) in enumerate(zip(result["keyframes"], SLIDE_TITLES), 1):
        image = Image.new("RGB", (kf["width"], kf["height"]), (248, 248, 245))
        draw = ImageDraw.Draw(image)
        draw.rectangle([0, 0, kf["width"], 64], fill=(36, 64, 110))
        draw.text((28, 18), f"{number}. {title}", fill="white", font_size=28)
        for i in range(4):
            draw.rounded_rectangle([48, 104 + i * 56, 48 + 440 - i * 70, 128 + i * 56], 6, fill=(176, 186, 200))
        path = work / kf["image_path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=85)


@pytest.fixture
def standup(tmp_path: Path) -> tuple[dict, Path]:
    result = json.loads(FIXTURE.read_text(encoding="utf-8"))
    work = tmp_path / "work"
    make_keyframes(result, work)
    return result, work


@pytest.fixture
def browser(tmp_path: Path):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
        "--disable-default-apps", "--disable-extensions", "--hide-scrollbars", "--mute-audio",
        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900", "--lang=en-US",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def load(driver, path: Path) -> None:
    driver.get_log("performance")  # drop what the blank start page did
    driver.get_log("browser")
    driver.get(path.as_uri())
    deadline = time.monotonic() + 15
    script = (
        "return document.readyState === 'complete' && "
        "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0);"
    )
    while not driver.execute_script(script):
        if time.monotonic() > deadline:
            pytest.fail("the report did not finish loading (or an image failed to decode)")
        time.sleep(0.1)


def console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] in {"SEVERE", "ERROR"}]


def requested_urls(driver, page: Path) -> list[str]:
    """Every URL the page asked for, and any web request at all (Chromium's own chrome:// pages aside)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            params = message["params"]
            url = params["request"]["url"]
            if params.get("documentURL") == page.as_uri() or not url.startswith(("chrome:", "chrome-", "about:")):
                urls.append(url)
    return urls


def at_width(driver, width: int, *, height: int = 900, mobile: bool | None = None) -> None:
    """The page laid out at `width` CSS pixels (a phone's, `mobile`, below 500 unless told)."""
    mobile = width < 500 if mobile is None else mobile
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})


def screenshot(driver, path: Path, *, width: int, mobile: bool = False, media: str = "") -> None:
    """A full-page PNG at `width` CSS pixels."""
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": media})
    metrics = {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": mobile}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    height = driver.execute_script("return Math.ceil(document.documentElement.scrollHeight);")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**metrics, "height": height})
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {"format": "png", "captureBeyondViewport": True, "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})


def test_report_renders_offline_without_errors(browser, standup, tmp_path):
    result, work = standup
    out = tmp_path / "out"
    out.mkdir()
    report = get_writer("html").write(result, out / "standup.html", media_dir=work)

    load(browser, report)
    assert console_errors(browser) == []
    others = [u for u in requested_urls(browser, report) if not u.startswith("data:") and u != report.as_uri()]
    assert others == [], f"the report made network requests: {others}"

    page = browser.execute_script(
        "return {title: document.title, images: Array.from(document.images).map(i => i.naturalWidth),"
        " blocks: document.querySelectorAll('.tl-block').length,"
        " wide: document.documentElement.scrollWidth, text: document.body.innerText};"
    )
    assert page["title"].startswith("standup")
    assert page["images"] == [640, 640, 640, 640]
    assert page["blocks"] >= 10
    for heading in ("Summary", "Decisions", "Action items", "Open questions", "Chapters", "Slides", "Transcript"):
        assert heading in page["text"]
    assert "Send the mobile release notes to the support team." in page["text"]

    screenshot(browser, ARTIFACTS / "report.png", width=1280)
    screenshot(browser, ARTIFACTS / "report-print.png", width=800, media="print")
    screenshot(browser, ARTIFACTS / "report-phone.png", width=390, mobile=True)
    shutil.copyfile(report, ARTIFACTS / "report.html")
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000

    # On a phone the page fits the screen: nothing wider than the viewport.
    at_width(browser, 390, height=844)
    assert browser.execute_script("return document.documentElement.scrollWidth;") <= 390
    assert console_errors(browser) == []


def test_printed_list_numbers_keep_their_digits(browser, standup, tmp_path):
    """Printed, the page has no padding of its own: a numbered list's markers ("12.") must fit in its own padding,
    or their first digits are cut at the paper's margin."""
    result, work = standup
    result["notes"]["decisions"] = [{"text": f"Decision number {i}.", "time": 10.0} for i in range(1, 13)]
    report = get_writer("html").write(result, tmp_path / "standup.html", media_dir=work)
    load(browser, report)
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    try:
        room, marker = browser.execute_script(
            "const ol = document.querySelector('ol.items'), li = ol.querySelectorAll('li')[11];"
            "const ctx = document.createElement('canvas').getContext('2d');"
            "ctx.font = getComputedStyle(li).font;"
            "return [ol.getBoundingClientRect().left + parseFloat(getComputedStyle(ol).paddingLeft),"
            " ctx.measureText('12. ').width];")
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
    assert room >= marker, (room, marker)


def test_report_without_notes_in_browser(browser, standup, tmp_path):
    result, work = standup
    result["notes"] = {"status": "failed", "error": "the model ran out of GPU memory", "summary": "",
                       "decisions": [], "action_items": [], "chapters": [], "questions": []}
    report = get_writer("html").write(result, tmp_path / "standup.html", media_dir=work)
    load(browser, report)
    assert console_errors(browser) == []
    text = browser.execute_script("return document.body.innerText;")
    assert "Meeting notes were not produced: the model ran out of GPU memory" in text
    assert "Who spoke when" in text and "Slides" in text and "See you tomorrow." in text
    screenshot(browser, ARTIFACTS / "report-notes-failed.png", width=1280)


@pytest.mark.skipif(not SAMPLE_VIDEO.exists(), reason="samples/standup.mp4 is missing")
def test_time_links_seek_the_recording_beside_the_report(browser, standup, tmp_path):
    result, work = standup
    out = tmp_path / "out dir"
    out.mkdir()
    shutil.copyfile(SAMPLE_VIDEO, out / "standup.mp4")
    report = get_writer("html").write(result, out / "standup.html", media_dir=work)

    load(browser, report)
    assert browser.execute_script("return document.getElementById('player').tagName;") == "VIDEO"
    link = browser.find_element("css selector", '#actions a.t[data-t="46.4"]')
    assert link.get_attribute("href").endswith("standup.mp4#t=46.4")
    browser.execute_script("arguments[0].click();", link)
    seek = browser.execute_script("return document.getElementById('player').currentTime;")
    assert abs(seek - 46.4) < 0.5
    # A time far down the page docks the player; Escape closes it.
    far = browser.find_elements("css selector", "#transcript a.t[data-t]")[-1]
    browser.execute_script("arguments[0].scrollIntoView(); arguments[0].click();", far)
    assert browser.execute_script("return document.body.classList.contains('docked');")
    browser.execute_script("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape'}));")
    assert not browser.execute_script("return document.body.classList.contains('docked');")
    at_width(browser, 1280)
    browser.execute_script("window.scrollTo(0, 0);")
    (ARTIFACTS / "report-player.png").write_bytes(browser.get_screenshot_as_png())
    # The only script is the page's own (its hash is in the CSP); nothing else ran or was blocked.
    assert console_errors(browser) == []
    allowed = {report.as_uri(), (out / "standup.mp4").as_uri()}
    others = [u for u in requested_urls(browser, report) if not u.startswith("data:") and u not in allowed]
    assert others == [], f"the report made network requests: {others}"


@pytest.mark.skipif(not SAMPLE_VIDEO.exists(), reason="samples/standup.mp4 is missing")
def test_the_player_shows_the_transcript_as_captions(browser, standup, tmp_path):
    """The captions track (a data: URI of X.vtt's text) loads under the page's CSP, and its cues show."""
    from mediapipe_g4.subtitles import subtitle_cues

    result, work = standup
    result["speakers"][2]["name"] = "Carol </track><script>alert(1)</script> --> \"'"
    out = tmp_path / "out"
    out.mkdir()
    shutil.copyfile(SAMPLE_VIDEO, out / "standup.mp4")
    report = get_writer("html").write(result, out / "standup.html", media_dir=work)

    load(browser, report)
    count = "var t = document.getElementById('player').textTracks[0]; return t && t.cues ? t.cues.length : -1;"
    deadline = time.monotonic() + 10
    while browser.execute_script(count) <= 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert browser.execute_script(count) == len(subtitle_cues(result))
    track = browser.execute_script(
        "var t = document.getElementById('player').textTracks[0];"
        "return {kind: t.kind, mode: t.mode, label: t.label, lang: t.language,"
        " first: t.cues[0].text, carol: Array.from(t.cues).map(c => c.text).filter(x => x.startsWith('<v Carol'))[0]};"
    )
    assert track["kind"] == "captions" and track["mode"] == "showing" and track["lang"] == "en"
    assert track["first"].startswith("<v Alice>Alice: Good morning")
    assert "&lt;/track&gt;&lt;script&gt;" in track["carol"]  # the name is the cue's text, not the page's markup

    # At 0:09 Bob's cue is the one showing.
    browser.execute_script(
        "var p = document.getElementById('player'); p.addEventListener('seeked', function () { p.dataset.seeked = 1; });"
        " p.currentTime = 9;"
    )
    deadline = time.monotonic() + 10
    seeked = "var p = document.getElementById('player'); return p.dataset.seeked && p.readyState >= 2;"  # a frame
    while not browser.execute_script(seeked):
        assert time.monotonic() < deadline, "the player did not seek"
        time.sleep(0.1)
    active = browser.execute_script("return Array.from(document.getElementById('player').textTracks[0].activeCues)"
                                    ".map(c => c.text);")
    assert len(active) == 1 and active[0].startswith("<v Bob>Bob: Sure. Yesterday")
    time.sleep(0.3)  # the caption drawn
    (ARTIFACTS / "report-captions.png").write_bytes(browser.get_screenshot_as_png())
    assert browser.execute_script("return document.scripts.length;") == 1
    assert console_errors(browser) == []  # no CSP violation: data: is allowed for media, and only that


def test_screen_readers_get_names_for_times_and_the_timeline(browser, standup, tmp_path):
    """What the accessibility tree says: time links are 'Play from m:ss', each timeline row one image with a text."""
    result, work = standup
    out = tmp_path / "out"
    out.mkdir()
    if SAMPLE_VIDEO.exists():
        shutil.copyfile(SAMPLE_VIDEO, out / "standup.mp4")
    result["options"]["language"] = "German"
    report = get_writer("html").write(result, out / "standup.html", media_dir=work)
    load(browser, report)
    nodes = browser.execute_cdp_cmd("Accessibility.getFullAXTree", {})["nodes"]

    def named(role: str) -> list[str]:
        return [n["name"]["value"] for n in nodes
                if not n.get("ignored") and n.get("role", {}).get("value") == role and "name" in n]

    assert named("image")[:3] == [
        "Alice: 7 turns, 28 s of speech, from 0:00 to 1:03",
        "Bob: 4 turns, 15 s of speech, from 0:07 to 0:52",
        "Carol: 4 turns, 14 s of speech, from 0:21 to 0:59",
    ]
    if SAMPLE_VIDEO.exists():
        times = [name for name in named("link") if name.startswith("Play from ")]
        assert "Play from 0:46" in times and len(times) > 20
        assert not any(re.fullmatch(r"\d+:\d\d", name) for name in named("link"))
    langs = browser.execute_script(
        "return [document.documentElement.lang, document.querySelector('.seg-body p').lang,"
        " document.querySelector('.summary p').closest('[lang]').lang];"
    )
    assert langs == ["en", "de", "en"]  # the page's words, the transcript's, the notes' (not marked: the page's)


def test_time_axis_of_a_3_hour_recording_keeps_each_label_on_one_line(browser, standup, tmp_path):
    """A label near the track's right end had no room and broke into a column of characters (a 3-hour recording's
    3:00:00 at 100 %): each label is one line and stays inside the track, on a desktop and on a phone."""
    result, work = standup
    result["source"]["duration"] = 10_800.0
    report = get_writer("html").write(result, tmp_path / "long.html", media_dir=work)
    load(browser, report)
    for width, mobile in ((1280, False), (390, True)):
        at_width(browser, width, mobile=mobile)
        ticks = browser.execute_script(
            "const track = document.querySelector('.tl-axis .tl-track').getBoundingClientRect();"
            "return Array.from(document.querySelectorAll('.tick')).map(t => { const r = t.getBoundingClientRect();"
            " return {text: t.textContent, height: r.height, left: r.left - track.left, right: track.right - r.right};"
            " });")
        assert ticks[-1]["text"] == "3:00:00", ticks
        assert {t["height"] for t in ticks} == {ticks[0]["height"]}, ticks  # one line each
        assert all(t["left"] >= -0.5 and t["right"] >= -0.5 for t in ticks), ticks
        assert browser.execute_script("return document.documentElement.scrollWidth;") <= width
    assert console_errors(browser) == []


def test_time_axis_labels_do_not_run_into_each_other(browser, standup, tmp_path):
    """Eight labels for a desktop's track ran into each other on a phone ("0:0015:0030:00...", 2:30:00 into 3:00:00):
    the labels shown, the last one (ending at its mark) included, keep apart at a desktop's, a tablet's and a phone's
    width, for recordings whose last mark is an odd or an even one; every mark stays."""
    result, work = standup
    for duration in (4200.0, 7200.0, 10_800.0, 36_000.0):
        result["source"]["duration"] = duration
        report = get_writer("html").write(result, tmp_path / "axis.html", media_dir=work)
        load(browser, report)
        for width in (1280, 700, 390):
            at_width(browser, width)
            ticks = browser.execute_script(
                "const track = document.querySelector('.tl-axis .tl-track').getBoundingClientRect();"
                "return Array.from(document.querySelectorAll('.tick')).map(t => { const r = t.getBoundingClientRect();"
                " return {text: t.textContent, shown: getComputedStyle(t).visibility === 'visible',"
                " mark: getComputedStyle(t, '::before').visibility === 'visible', left: r.left, right: r.right,"
                " inside: r.left >= track.left - 0.5 && r.right <= track.right + 0.5}; });")
            shown = [t for t in ticks if t["shown"]]
            assert all(t["mark"] for t in ticks), ticks
            assert shown[0]["text"] == "0:00" and shown[-1] == ticks[-1] and len(shown) >= 3, (duration, width, ticks)
            assert all(t["inside"] for t in shown), (duration, width, ticks)
            gaps = [b["left"] - a["right"] for a, b in zip(shown, shown[1:])]
            assert min(gaps) >= 4, (duration, width, gaps, shown)
    assert console_errors(browser) == []


def test_each_timeline_row_says_whose_it_is_on_a_phone(browser, standup, tmp_path):
    """A phone's timeline labels had room for "Person…" only, so fifteen rows could not be told apart: on a phone
    each name stands whole on a line above its track, and the page stays the screen's width."""
    result, work = standup
    result["speakers"] = [{"id": f"S{i}", "name": f"Person {i}", "talk_time": 1.0} for i in range(1, 16)]
    for i, seg in enumerate(result["segments"]):
        seg["speaker"] = f"S{i % 15 + 1}"
    report = get_writer("html").write(result, tmp_path / "many.html", media_dir=work)
    load(browser, report)
    at_width(browser, 390)
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('.tl-row[role=img]')).map(row => {"
        " const label = row.querySelector('.tl-label'), track = row.querySelector('.tl-track');"
        " const l = label.getBoundingClientRect(), t = track.getBoundingClientRect();"
        " return {name: label.textContent, whole: label.scrollWidth <= label.clientWidth, above: l.bottom <= t.top + 0.5,"
        " track: t.width}; });")
    assert [r["name"] for r in rows] == [f"Person {i}" for i in range(1, 16)]
    assert all(r["whole"] and r["above"] for r in rows), rows
    assert min(r["track"] for r in rows) > 300  # the track has the screen's width
    assert browser.execute_script("return document.documentElement.scrollWidth;") <= 390
    assert console_errors(browser) == []


LONG_NAME = "Dr. Maximiliana Alexandrovna Wolfeschlegelsteinhausenbergerdorff-Featherstonehaugh III"


def load_with_names(browser, standup, tmp_path, *names: str):
    """The stand-up's report with its first speakers renamed, loaded; yields at a desktop's width, then a phone's."""
    result, work = standup
    for speaker, name in zip(result["speakers"], names):
        speaker["name"] = name
    load(browser, get_writer("html").write(result, tmp_path / "names.html", media_dir=work))
    for width in (1280, 390):
        at_width(browser, width)
        yield width


def test_a_speakers_share_and_time_stay_one_phrase_beside_a_long_name(browser, standup, tmp_path):
    """Beside a long name a speaker's "27% · 7 min 12 s" broke into a column of pieces: the figures stay on one line
    (under the name when it has no room beside it), at a desktop's and at a phone's width."""
    for width in load_with_names(browser, standup, tmp_path, LONG_NAME,
                                 "Bartholomew-Christopher Featherstonehaugh-Cholmondeley"):
        shares = browser.execute_script(
            "return Array.from(document.querySelectorAll('.people .share')).map(s => { const text = document.createRange();"
            " text.selectNodeContents(s);"
            " return {text: s.textContent, lines: new Set(Array.from(text.getClientRects()).map(r => Math.round(r.top))).size,"
            " right: s.getBoundingClientRect().right, room: s.closest('.people').getBoundingClientRect().right}; });")
        assert len(shares) == 3 and all(s["lines"] == 1 for s in shares), (width, shares)
        assert all(s["right"] <= s["room"] + 0.5 for s in shares), (width, shares)
        assert browser.execute_script("return document.documentElement.scrollWidth;") <= width
    assert console_errors(browser) == []


def test_a_segments_time_sits_on_its_first_line_of_speech(browser, standup, tmp_path):
    """A turn's time was pushed down by a padding that assumed a one-line name, so beside a long name it sat on the
    name's second line: each time now sits on the line of its speech's first words, however long the name."""
    for width in load_with_names(browser, standup, tmp_path, LONG_NAME,
                                 "محمد عبد الله بن عبد الرحمن الهاشمي من مدينة الإسكندرية في مصر العربية"):
        segments = browser.execute_script(
            "return Array.from(document.querySelectorAll('.seg')).map(seg => {"
            " const t = seg.querySelector('.t').getBoundingClientRect(), p = seg.querySelector('.seg-body p');"
            " const first = document.createRange(); first.setStart(p.firstChild, 0); first.setEnd(p.firstChild, 1);"
            " const line = first.getBoundingClientRect(), who = seg.querySelector('.seg-who');"
            " return {text: p.textContent.slice(0, 20), off: (t.top + t.bottom - line.top - line.bottom) / 2,"
            " whoLines: who ? Math.round(who.getBoundingClientRect().height / parseFloat(getComputedStyle(who).lineHeight)) : 0};"
            " });")
        assert max(s["whoLines"] for s in segments) >= 2  # a name on two lines or more, to be sure
        assert all(abs(s["off"]) <= 3 for s in segments), (width, [s for s in segments if abs(s["off"]) > 3])
    assert console_errors(browser) == []


FIRST_LETTER_SHOWN = (
    "return Array.from(document.querySelectorAll(arguments[0])).map(e => { const box = e.getBoundingClientRect();"
    " const range = document.createRange(); range.setStart(e.firstChild, 0); range.setEnd(e.firstChild, 1);"
    " const r = range.getBoundingClientRect();"
    " return {name: e.textContent, first: r.left >= box.left - 0.5 && r.right <= box.right + 0.5,"
    " dir: getComputedStyle(e).direction}; });"
)


def test_a_right_to_left_name_too_long_for_its_label_keeps_its_beginning(browser, standup, tmp_path):
    """A timeline label cut an Arabic or Hebrew name from the wrong end (its beginning), as the label was laid out
    left to right: each label shows its name's first letter, whichever way the name is written."""
    result, work = standup
    result["speakers"][0]["name"] = "محمد عبد الله بن عبد الرحمن الهاشمي"
    result["speakers"][1]["name"] = "דוד בן יוסף כהן מירושלים הבירה"
    result["speakers"][2]["name"] = "Bartholomew-Christopher Featherstonehaugh"
    report = get_writer("html").write(result, tmp_path / "rtl.html", media_dir=work)
    load(browser, report)
    for width in (1280, 390):
        at_width(browser, width)
        labels = browser.execute_script(FIRST_LETTER_SHOWN, ".tl-row[role=img] .tl-label")
        assert [x["dir"] for x in labels] == ["rtl", "rtl", "ltr"], labels
        assert all(x["first"] for x in labels), (width, labels)
    assert console_errors(browser) == []


def test_slide_numbers_show_whole_or_not_at_all(browser, standup, tmp_path):
    """A 3-hour meeting's 72 slides left slivers of clipped digits in the timeline's slides row: a number shows only
    where its block holds all of it (the link's accessible name says it anyway); the standup's four all show."""
    result, work = standup

    def numbers(report: Path) -> list[dict]:
        load(browser, report)
        return browser.execute_script(
            "return Array.from(document.querySelectorAll('.tl-slide')).map(a => { const n = a.firstElementChild;"
            " return {shown: getComputedStyle(n).visibility === 'visible', need: n.getBoundingClientRect().width,"
            " room: a.clientWidth - parseFloat(getComputedStyle(a).paddingLeft)}; });")

    standup_numbers = numbers(get_writer("html").write(result, tmp_path / "standup.html", media_dir=work))
    assert len(standup_numbers) == 4 and all(n["shown"] for n in standup_numbers)
    result["source"]["duration"] = 10_800.0
    result["keyframes"] = [{"time": i * 150.0, "end": (i + 1) * 150.0, "image_path": None, "width": 640,
                            "height": 360} for i in range(72)]
    for width in (1280, 390):
        at_width(browser, width)
        long = numbers(get_writer("html").write(result, tmp_path / "long.html", media_dir=work))
        assert len(long) == 72
        assert all(n["need"] <= n["room"] + 0.5 for n in long if n["shown"]), long  # none clipped
    assert console_errors(browser) == []
