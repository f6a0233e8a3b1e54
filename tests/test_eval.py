"""`g4media eval`: metrics on hand-made cases with known answers, reference parsing (with malformed lines),
pairing, and one end-to-end run on a transcript made with the tiny random checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import jiwer
import pytest
from click.testing import CliRunner
from conftest import ROOT, SAMPLES

from mediapipe_g4.cli import main
from mediapipe_g4.errors import EvalError
from mediapipe_g4.evaluate import evaluate, format_table
from mediapipe_g4.metrics import (
    cp_wer,
    diarization_errors,
    naming_accuracy,
    normalize_text,
    notes_recall,
    phrase_coverage,
    wer,
    word_errors,
)
from mediapipe_g4.references import (
    NotesItem,
    Reference,
    Turn,
    Utterance,
    load_references,
    parse_notes_reference,
    parse_rttm,
    parse_segments_json,
    parse_stm,
)

FIXTURE = ROOT / "tests" / "fixtures" / "standup_result.json"


def words(text: str) -> list[str]:
    return text.split()


def utt(speaker, text, start=0.0, end=1.0):
    return Utterance(start, end, speaker, text)


# --------------------------------------------------------------------------- text


def test_normalization_ignores_case_punctuation_and_number_spelling():
    assert normalize_text("Twenty-one apples, please!") == normalize_text("21 apples please")
    assert normalize_text("Let's keep the Stand-up short.") == ["let", "us", "keep", "the", "stand", "up", "short"]
    assert normalize_text("Uh, okay.") == ["okay"]


def test_wer_perfect_match_and_one_substitution_agree_with_jiwer():
    ref = [utt("A", "Ship the payment retry feature next Tuesday.", 0, 3)]
    assert wer(ref, [utt("S1", "ship the payment retry feature next tuesday", 0, 3)]).rate == 0.0
    got = wer(ref, [utt("S1", "Ship the payment retry feature next Thursday.", 0, 3)])
    assert (got.substitutions, got.deletions, got.insertions, got.ref_words) == (1, 0, 0, 7)
    assert got.rate == pytest.approx(1 / 7)
    assert got.rate == pytest.approx(jiwer.wer("ship the payment retry feature next tuesday",
                                               "ship the payment retry feature next thursday"))
    # words in time order across segments; speakers play no part in WER
    two = [utt("A", "good morning", 0, 1), utt("B", "hello there", 2, 3)]
    assert wer(two, [utt("X", "hello there", 2, 3), utt("Y", "good morning", 0, 1)]).rate == 0.0
    assert word_errors([], ["a", "b"]).insertions == 2 and word_errors(["a"], []).deletions == 1


# --------------------------------------------------------------------------- cpWER


REF_WORDS = {"Alice": words("good morning bob"), "Bob": words("thanks alice")}


def test_cpwer_perfect_and_swapped_speakers():
    perfect = cp_wer(REF_WORDS, {"S1": words("good morning bob"), "S2": words("thanks alice")})
    assert perfect.rate == 0.0 and dict(perfect.mapping) == {"Alice": "S1", "Bob": "S2"}
    # the labels are permuted: the best permutation finds them, no error
    permuted = cp_wer(REF_WORDS, {"S2": words("good morning bob"), "S1": words("thanks alice")})
    assert permuted.rate == 0.0 and dict(permuted.mapping) == {"Alice": "S2", "Bob": "S1"}
    # the words of the two speakers swapped between them mid-way: attribution errors that WER cannot see
    swapped = cp_wer(REF_WORDS, {"S1": words("good morning alice"), "S2": words("thanks bob")})
    assert swapped.errors.errors == 2 and swapped.rate == pytest.approx(2 / 5)
    assert wer([utt("Alice", "good morning bob", 0, 1), utt("Bob", "thanks alice", 1, 2)],
               [utt("S1", "good morning bob", 0, 1), utt("S1", "thanks alice", 1, 2)]).rate == 0.0
    one_speaker = cp_wer(REF_WORDS, {"S1": words("good morning bob thanks alice")})
    # S1 pairs with Alice (2 insertions) and Bob is unmatched (2 deletions): 4 errors, not 6 the other way
    assert dict(one_speaker.mapping) == {"Alice": "S1", "Bob": None} and one_speaker.rate == pytest.approx(4 / 5)


def test_cpwer_missing_and_extra_speakers():
    missing = cp_wer({**REF_WORDS, "Carol": words("okay")},
                     {"S1": words("good morning bob"), "S2": words("thanks alice")})
    assert (missing.errors.deletions, missing.errors.errors, missing.errors.ref_words) == (1, 1, 6)
    assert dict(missing.mapping)["Carol"] is None
    extra = cp_wer(REF_WORDS, {"S1": words("good morning bob"), "S2": words("thanks alice"), "S3": words("hm yes")})
    assert extra.errors.insertions == 2 and extra.unmatched_result_speakers == ("S3",)
    assert extra.rate == pytest.approx(2 / 5)


# --------------------------------------------------------------------------- DER, JER, naming


REF_TURNS = [Turn(0, 10, "Alice"), Turn(10, 20, "Bob")]


def test_der_perfect_swapped_labels_and_missing_speaker():
    same = diarization_errors(REF_TURNS, [Turn(0, 10, "S1"), Turn(10, 20, "S2")], 20, collar=0)
    assert same["der"] == 0 and same["jer"] == 0 and same["mapping"] == {"S1": "Alice", "S2": "Bob"}
    swapped = diarization_errors(REF_TURNS, [Turn(0, 10, "S2"), Turn(10, 20, "S1")], 20, collar=0)
    assert swapped["der"] == 0 and swapped["mapping"] == {"S2": "Alice", "S1": "Bob"}  # labels are free
    one = diarization_errors(REF_TURNS, [Turn(0, 20, "S1")], 20, collar=0)
    assert one["der"] == pytest.approx(0.5) and one["confusion"] == pytest.approx(10)  # Bob's 10 s confused
    # JER: Alice~S1 has 10 s false alarm over a 20 s union (0.5), Bob is unmatched (1): mean 0.75
    assert one["jer"] == pytest.approx(0.75)
    missed = diarization_errors(REF_TURNS, [Turn(0, 10, "S1")], 20, collar=0)
    assert missed["der"] == pytest.approx(0.5) and missed["missed"] == pytest.approx(10)


def test_collar_is_seconds_on_each_side_like_md_eval():
    from pyannote.core import Annotation, Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    hyp = [Turn(0, 10.2, "S1"), Turn(10.2, 20, "S2")]  # the change 0.2 s late
    assert diarization_errors(REF_TURNS, hyp, 20, collar=0)["der"] == pytest.approx(0.2 / 20)
    # 0.25 s each side hides a 0.2 s error; 0.125 s each side (pyannote's collar=0.25 total) does not
    assert diarization_errors(REF_TURNS, hyp, 20, collar=0.25)["der"] == 0
    got = diarization_errors(REF_TURNS, hyp, 20, collar=0.125)["der"]
    assert got == pytest.approx(0.075 / 19.5)  # 0.2 - 0.125 s confused, over 20 s minus 2 collars of 0.25 s

    ref, h = Annotation(), Annotation()
    for i, t in enumerate(REF_TURNS):
        ref[Segment(t.start, t.end), i] = t.speaker
    for i, t in enumerate(hyp):
        h[Segment(t.start, t.end), i] = t.speaker
    direct = DiarizationErrorRate(collar=0.25, skip_overlap=False)(ref, h, uem=Timeline([Segment(0, 20)]))
    assert got == pytest.approx(direct)


def test_naming_accuracy():
    ref = Reference("x", turns=tuple(REF_TURNS))
    mapping = {"S1": "Alice", "S2": "Bob"}
    both = naming_accuracy(mapping, ref, {"S1": "alice", "S2": "Bob"}, ["Alice", "Bob"])
    assert (both["correct"], both["total"]) == (2, 2)
    default = naming_accuracy(mapping, ref, {"S1": "Alice", "S2": "Speaker 2"}, ["Alice", "Bob"])
    assert default["value"] == 0.5
    swapped = naming_accuracy(mapping, ref, {"S1": "Bob", "S2": "Alice"}, ["Alice", "Bob"])
    assert swapped["correct"] == 0
    missing = naming_accuracy({"S1": "Alice"}, ref, {"S1": "Alice"}, ["Alice", "Bob"])  # Bob not found at all
    assert (missing["correct"], missing["total"]) == (1, 2)
    anonymous = Reference("x", turns=(Turn(0, 1, "spk_0"), Turn(1, 2, "SPEAKER_01")))
    assert naming_accuracy({}, anonymous, {}, ["spk_0", "SPEAKER_01"]) is None  # n/a: no names
    named_by_json = Reference("x", names=(("S1", "Dana"),))
    assert naming_accuracy({"A": "S1"}, named_by_json, {"A": "Dana"}, ["S1"])["value"] == 1.0


# --------------------------------------------------------------------------- notes


def test_notes_recall_and_owners():
    ref = [NotesItem("decision", "Ship the payment retry feature next Tuesday"),
           NotesItem("action_item", "Update the API documentation", "Bob"),
           NotesItem("action_item", "Send the release notes to the support team", "Carol")]
    notes = {"status": "ok", "decisions": [{"text": "We will ship the retry feature on Tuesday.", "time": 1}],
             "action_items": [{"text": "Bob updates the API docs", "owner": "S2"},
                              {"text": "Send release notes to support", "owner": "S1"}]}
    got = notes_recall(ref, notes, {"S1": "Alice", "S2": "Bob"})
    # ship, retry, feature, tuesday of ship/payment/retry/feature/next/tuesday = 4/6 >= 0.6: found
    # update, api of update/api/documentation = 2/3: found, owner S2 = Bob right
    # send, release, note, support of send/release/note/support/team = 4/5: found, owner S1 = Alice wrong
    assert [r["found"] for r in got["items"]] == [True, True, True]
    assert (got["found"], got["total"], got["owners_right"], got["owners_total"]) == (3, 3, 1, 2)
    assert phrase_coverage("Update the API documentation", "Update the docs") == pytest.approx(1 / 3)
    # a decision is looked for among decisions only
    only_actions = notes_recall(ref[:1], {"status": "ok", "decisions": [],
                                          "action_items": [{"text": ref[0].text, "owner": None}]}, {})
    assert only_actions["found"] == 0
    assert notes_recall(ref, {"status": "failed", "error": "x"}, {})["value"] == 0.0
    assert notes_recall(ref, {"status": "skipped"}, {})["value"] is None


def test_fixture_scores_perfectly_on_the_standup_references(tmp_path):
    shutil.copy(FIXTURE, tmp_path / "standup.json")
    report = evaluate(tmp_path, SAMPLES)
    (r,) = report["recordings"]
    assert r["reference_files"] and r["wer"]["value"] == 0 and r["cpwer"]["value"] == 0
    assert r["der"]["value"] == 0 and r["speakers"] == {"reference": 3, "result": 3, "error": 0}
    assert (r["naming"]["correct"], r["naming"]["total"]) == (3, 3)
    assert (r["notes"]["found"], r["notes"]["total"], r["notes"]["owners_right"]) == (5, 5, 3)
    assert r["speed"]["rtf"] == pytest.approx(21.06 / 63.942, abs=1e-3)
    assert sorted(report["references_without_result"]) == ["interview", "phone_call"]
    table = format_table(report)
    assert "standup.mp4" in table and "overall (1)" in table and "transcribe" in table


# --------------------------------------------------------------------------- parsing


def test_rttm_parsing_and_malformed_lines():
    text = (";; comment\n\nSPKR-INFO f 1 <NA> <NA> <NA> unknown A <NA> <NA>\n"
            "SPEAKER f 1 0.50 1.25 <NA> <NA> A <NA> <NA>\nSPEAKER g 1 2 0 <NA> <NA> B <NA> <NA>\n"
            "SPEAKER g 1 3 1 <NA> <NA> B\n")
    assert parse_rttm(text) == {"f": [Turn(0.5, 1.75, "A")], "g": [Turn(3, 4, "B")]}
    for bad, words in [("SPEAKER f 1 0.5\n", "has 4 fields"), ("SPEAKER f 1 x 1 <NA> <NA> A <NA> <NA>\n", "start 'x'"),
                       ("SPEAKER f 1 1 -2 <NA> <NA> A <NA> <NA>\n", "must not be negative"),
                       ("hello world\n", "not an RTTM line")]:
        with pytest.raises(EvalError, match=words) as err:
            parse_rttm("SPEAKER f 1 0 1 <NA> <NA> A <NA> <NA>\n" + bad, "ref.rttm")
        assert "ref.rttm line 2" in str(err.value)


def test_stm_parsing_and_malformed_lines():
    text = (";; comment\nrec 1 Alice 0.0 1.5 <o,f0,female> Good morning, Bob.\nrec 1 Bob 1.5 2.0 Hi.\n"
            "rec 1 inter_segment_gap 2.0 3.0\nrec A Carol 3 4\n")
    got = parse_stm(text)["rec"]
    assert got == [Utterance(0.0, 1.5, "Alice", "Good morning, Bob."), Utterance(1.5, 2.0, "Bob", "Hi."),
                   Utterance(2.0, 3.0, "inter_segment_gap", "", scored=False), Utterance(3.0, 4.0, "Carol", "")]
    for bad, words in [("rec 1 A 0\n", "has 4 fields"), ("rec 1 A 2 1 hi\n", "not a span"),
                       ("rec 1 A 0 one hi\n", "end 'one'"), ("rec 1 A 0 1 <o,f0 hi\n", "no closing")]:
        with pytest.raises(EvalError, match=words) as err:
            parse_stm(bad, "ref.stm")
        assert "ref.stm line 1" in str(err.value)


def test_segments_and_notes_json():
    utts, names, duration = parse_segments_json(json.loads((SAMPLES / "phone_call.truth.json").read_text()))
    assert names == {"S1": "Dana", "S2": "Mark"} and duration > 30 and utts[0].speaker == "S1"
    assert parse_segments_json([{"text": "hello"}])[0] == [Utterance(None, None, None, "hello")]
    with pytest.raises(EvalError, match="segment 0 needs numeric start"):
        parse_segments_json({"segments": [{"start": "soon", "end": 1}]}, "x.json")
    with pytest.raises(EvalError, match="no list of segments"):
        parse_segments_json({"turns": []})
    items = parse_notes_reference(json.loads((SAMPLES / "standup.notes.json").read_text()))
    assert [i.kind for i in items].count("decision") == 2 and {i.owner for i in items} == {None, "Bob", "Carol"}
    with pytest.raises(EvalError, match=r"action_items\[0\] needs a non-empty text"):
        parse_notes_reference({"action_items": [{"owner": "Bob"}]})


def test_times_that_overflow_or_are_past_any_recording_are_refused(tmp_path):
    """1e308 + 1e308 is inf: the table said `DER nan%` and --json printed bare NaN (exit status 0). Times past 115
    days, as results' times, are refused too: a few such turns sum to inf all the same."""
    line = "SPEAKER phone_call 1 {} {} <NA> <NA> A <NA> <NA>\n"
    with pytest.raises(EvalError, match=r"ref.rttm line 1: the end \(1e308 \+ 1e308\) is not a finite number"):
        parse_rttm(line.format("1e308", "1e308"), "ref.rttm")
    with pytest.raises(EvalError, match=r"ref.rttm line 1: the end \(0 \+ 1e308\) is 1e\+308 s, more than"):
        parse_rttm(line.format("0", "1e308"), "ref.rttm")
    with pytest.raises(EvalError, match="ref.stm line 1: the end is 1e\\+308 s, more than"):
        parse_stm("rec 1 A 0 1e308 hi\n", "ref.stm")
    with pytest.raises(EvalError, match="x.json segment 0: the end is 1e\\+308 s, more than"):
        parse_segments_json([{"start": 0, "end": 1e308}], "x.json")
    assert parse_segments_json({"segments": [], "duration": float("inf")})[2] is None  # 1e999 in the file
    diarized = tmp_path / "phone_call.json"
    diarized.write_text('{"turns": [{"start": 0, "end": 1e999, "speaker": "S1"}]}')
    with pytest.raises(EvalError, match=r"turns\[0\].end is not a finite number"):
        evaluate(diarized, SAMPLES / "phone_call.rttm")
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "phone_call.rttm").write_text(line.format("1e308", "1e308"))
    for args in ([], ["--json"]):
        out = CliRunner().invoke(main, ["eval", str(SAMPLES / "phone_call.rttm"), str(refs), *args])
        assert out.exit_code == 1 and "not a finite number" in out.output and "nan" not in out.output.lower()


def test_eval_json_never_prints_nan(monkeypatch):
    """Python's json writes NaN and Infinity bare, which is not JSON: a non-finite number is an error instead."""
    monkeypatch.setattr("mediapipe_g4.evaluate.evaluate", lambda *a, **k: {"der": {"value": float("nan")}})
    out = CliRunner().invoke(main, ["eval", str(SAMPLES / "phone_call.rttm"), str(SAMPLES), "--json"])
    assert out.exit_code == 1 and out.output.startswith("Error: the JSON output would hold a number that is not "
                                                        "finite") and len(out.output.splitlines()) == 1, out.output


def test_sample_references_agree_with_the_truth():
    """samples/make_references.py keeps the RTTM and STM in step with the truth JSON."""
    sys.path.insert(0, str(SAMPLES))
    try:
        import make_references
    finally:
        sys.path.remove(str(SAMPLES))
    refs = load_references(SAMPLES)
    for stem in ("standup", "phone_call", "interview"):
        truth = json.loads((SAMPLES / f"{stem}.truth.json").read_text())
        assert (SAMPLES / f"{stem}.rttm").read_text() == make_references.rttm_text(stem, truth)
        assert (SAMPLES / f"{stem}.stm").read_text() == make_references.stm_text(stem, truth)
        ref = refs[stem]
        assert len(ref.turns) == len(ref.utterances) == len(truth["segments"])
        assert {ref.name_of(t.speaker) for t in ref.turns} == {s["name"] for s in truth["speakers"]}
    assert refs["standup"].notes and refs["phone_call"].notes is None


def test_pairing_folders_and_clear_errors(tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    shutil.copy(FIXTURE, out / "sub" / "standup.json")
    (out / "index.html").write_text("<html></html>")
    (out / "other.json").write_text('{"not": "a result"}')
    refs = tmp_path / "refs"
    refs.mkdir()
    shutil.copy(SAMPLES / "standup.rttm", refs / "standup.rttm")
    shutil.copy(SAMPLES / "phone_call.rttm", refs / "phone_call.rttm")
    report = evaluate(out, refs, collar=0.25)
    assert [r["reference"] for r in report["recordings"]] == ["standup"]
    assert report["recordings"][0]["wer"] is None and report["recordings"][0]["der"]["value"] == 0
    assert report["references_without_result"] == ["phone_call"]
    combined = tmp_path / "all.rttm"  # one RTTM for many recordings: keyed by file id
    combined.write_text((refs / "standup.rttm").read_text() + (refs / "phone_call.rttm").read_text())
    assert set(load_references(combined)) == {"standup", "phone_call"}
    assert evaluate(out, combined)["recordings"][0]["der"]["value"] == 0
    shutil.copy(combined, refs / "all.rttm")  # twice in one folder: refused, not doubled
    with pytest.raises(EvalError, match="two references of the same kind for 'phone_call'"):
        load_references(refs)
    (refs / "all.rttm").unlink()
    (refs / "phone_call.rttm").write_text("SPEAKER phone_call 1 zero 1 <NA> <NA> A <NA> <NA>\n")
    with pytest.raises(EvalError, match="phone_call.rttm line 1: start 'zero' is not a number"):
        evaluate(out, refs)
    with pytest.raises(EvalError, match="no result in .* has a reference"):
        evaluate(out, SAMPLES / "interview.rttm")  # names differ: no pair
    # a result file and a reference file given by hand pair whatever their names
    assert evaluate(out / "sub" / "standup.json", refs / "standup.rttm")["recordings"][0]["reference"] == "standup"
    shutil.copy(SAMPLES / "standup.rttm", tmp_path / "mine.rttm")
    assert evaluate(out / "sub" / "standup.json", tmp_path / "mine.rttm")["recordings"][0]["der"]["value"] == 0
    (out / "sub" / "standup.json").unlink()
    with pytest.raises(EvalError, match="no results found"):
        evaluate(out / "sub", SAMPLES)
    with pytest.raises(EvalError, match="interview.rttm is a reference as well as a result"):
        evaluate(SAMPLES, SAMPLES)  # the samples' RTTMs are no results to score against themselves


def test_who_spoke_when_alone_is_scored_as_a_result(tmp_path):
    """An RTTM (or `diarize --json` output) as RESULTS: DER, JER and speaker count, no WER/names/notes (there are
    no words), paired by file id or by name; a shifted speaker change costs what it should."""
    shifted = tmp_path / "hyp.rttm"  # phone_call's reference with one boundary 1 s late, and a second recording
    lines = (SAMPLES / "phone_call.rttm").read_text().splitlines()
    f = lines[0].split()
    f[4] = f"{float(f[4]) + 1.0:.3f}"
    shifted.write_text("\n".join([" ".join(f), *lines[1:], *(SAMPLES / "standup.rttm").read_text().splitlines()]))
    report = evaluate(shifted, SAMPLES, collar=0)
    by_ref = {r["reference"]: r for r in report["recordings"]}
    assert set(by_ref) == {"phone_call", "standup"}
    assert by_ref["standup"]["der"]["value"] == 0 and by_ref["standup"]["speakers"]["error"] == 0
    call = by_ref["phone_call"]
    assert call["wer"] is None and call["cpwer"] is None and call["naming"] is None
    assert 0 < call["der"]["value"] < 0.05 and call["der"]["false_alarm"] == pytest.approx(1.0, abs=0.01)
    assert by_ref["standup"]["notes"] is None  # standup has a notes reference, but an RTTM has no notes
    assert call["duration"] > 30  # from the turns: an RTTM does not say how long the recording is
    assert report["overall"]["duration"] == pytest.approx(call["duration"] + by_ref["standup"]["duration"])
    assert report["overall"]["speed"]["rtf"] is None  # no timings to divide
    diarized = tmp_path / "call.json"
    truth = json.loads((SAMPLES / "phone_call.truth.json").read_text())
    diarized.write_text(json.dumps({"duration": 38.1, "speakers": ["S1", "S2"], "turns": [
        {"start": s["start"], "end": s["end"], "speaker": s["speaker"]} for s in truth["segments"]]}))
    one = evaluate(diarized, SAMPLES / "phone_call.rttm")["recordings"][0]
    assert one["der"]["value"] == 0 and one["duration"] == 38.1 and one["wer"] is None
    assert "-" in format_table(evaluate(diarized, SAMPLES / "phone_call.rttm")).splitlines()[2]
    folder = tmp_path / "diarized"  # a folder of who-spoke-when outputs, as `diarize --rttm` into one writes them
    (folder / "sub").mkdir(parents=True)
    shutil.copy(SAMPLES / "standup.rttm", folder / "sub" / "standup.rttm")
    shutil.copy(diarized, folder / "phone_call.json")
    (folder / "notes.txt").write_text("not a result")
    got = evaluate(folder, SAMPLES)
    assert sorted((r["reference"], r["der"]["value"]) for r in got["recordings"]) == [("phone_call", 0),
                                                                                       ("standup", 0)]
    shutil.copy(FIXTURE, folder / "standup.json")  # full results there: those are the results, not the RTTMs
    assert [r["result_file"] for r in evaluate(folder, SAMPLES)["recordings"]] == [str(folder / "standup.json")]
    diarized.write_text('{"turns": [{"start": "soon"}]}')
    with pytest.raises(EvalError, match=r"turns\[0\] needs a numeric start"):
        evaluate(diarized, SAMPLES / "phone_call.rttm")
    shifted.write_text(";; nothing here\n")
    with pytest.raises(EvalError, match="no SPEAKER lines"):
        evaluate(shifted, SAMPLES)


def test_a_name_and_its_rttm_file_id_pair_both_ways(tmp_path, caplog):
    """`diarize "with space.wav" --rttm sp.rttm` writes the file id `with_space` (RTTM ids hold no whitespace): it
    paired with no `with space.rttm` / `with space.stm` ("no result in sp.rttm has a reference")."""
    call = (SAMPLES / "phone_call.rttm").read_text()
    (tmp_path / "sp.rttm").write_text(call.replace("phone_call", "with_space"))
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "with space.rttm").write_text(call)
    shutil.copy(SAMPLES / "phone_call.stm", refs / "with space.stm")
    (got,) = evaluate(tmp_path / "sp.rttm", refs)["recordings"]
    assert got["reference"] == "with space" and got["der"]["value"] == 0
    # The other way: a result named with a space, its reference under the RTTM id in a file of several.
    truth = json.loads((SAMPLES / "phone_call.truth.json").read_text())
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "with space.json").write_text(json.dumps({"turns": [
        {"start": s["start"], "end": s["end"], "speaker": s["speaker"]} for s in truth["segments"]]}))
    both = tmp_path / "both.rttm"
    both.write_text(call.replace("phone_call", "with_space") + (SAMPLES / "standup.rttm").read_text())
    report = evaluate(tmp_path / "res", both)
    assert [r["reference"] for r in report["recordings"]] == ["with_space"] and report["recordings"][0]["der"]["value"] == 0
    # Two references that differ only in whitespace: neither is taken, and the warning names both.
    (refs / "with  space.rttm").write_text(call)
    with caplog.at_level("WARNING", logger="mediapipe_g4"), pytest.raises(EvalError, match="no result in"):
        evaluate(tmp_path / "sp.rttm", refs)
    assert "sp.rttm pairs with no reference: 'with  space', 'with space' all have its name" in caplog.text


def test_two_rttms_alone_have_a_duration(tmp_path):
    # Neither file says how long the recording is: the table said "0.0" s (and the overall sum 0) before.
    hyp = tmp_path / "phone_call.rttm"
    shutil.copy(SAMPLES / "phone_call.rttm", hyp)
    one = evaluate(hyp, SAMPLES / "phone_call.rttm")["recordings"][0]
    last = max(float(f[3]) + float(f[4]) for f in map(str.split, hyp.read_text().splitlines()))
    assert one["der"]["value"] == 0 and one["duration"] == pytest.approx(last)


def test_cli_eval_table_and_error_line(tmp_path):
    shutil.copy(FIXTURE, tmp_path / "standup.json")
    runner = CliRunner()
    table = runner.invoke(main, ["eval", str(tmp_path), str(SAMPLES)])
    assert table.exit_code == 0, table.output
    assert "WER" in table.output and "cpWER" in table.output and "DER" in table.output and "overall" in table.output
    as_json = runner.invoke(main, ["eval", str(tmp_path / "standup.json"), str(SAMPLES), "--json", "--collar", "0"])
    assert as_json.exit_code == 0 and json.loads(as_json.output)["collar"] == 0
    bad = runner.invoke(main, ["eval", str(tmp_path / "nothing"), str(SAMPLES)])
    assert bad.exit_code == 1 and "does not exist" in bad.output


@pytest.mark.parametrize("field, value, says", [
    ("options", "x", "options is not an object"),
    ("timings", 7, "timings is not an object"),
    ("duration", "x", 'source.duration is "x", not a time'),
    ("decision", 5, "notes.decisions[0] is 5, not an object or a text"),
    ("decision", {"text": True}, "notes.decisions[0].text is not a string"),
])
def test_eval_names_the_field_an_edit_broke_in_a_result(tmp_path, field, value, says):
    """A result edited by hand into something eval cannot read: one line naming the file and the field (it was
    `unexpected AttributeError`), given as a file or found in a folder."""
    result = json.loads(FIXTURE.read_text())
    if field == "duration":
        result["source"]["duration"] = value
    elif field == "decision":
        result["notes"]["decisions"][0] = value
    else:
        result[field] = value
    (tmp_path / "standup.json").write_text(json.dumps(result))
    for given in (tmp_path / "standup.json", tmp_path):
        out = CliRunner().invoke(main, ["eval", str(given), str(SAMPLES)])
        assert out.exit_code == 1 and "unexpected" not in out.output, out.output
        assert f"standup.json: {says}" in out.output, out.output


# --------------------------------------------------------------------------- end to end, tiny checkpoint


REF_WORDS_PHONE_CALL = 96  # after normalization ("you're" -> "you are")


@pytest.mark.slow
def test_eval_on_a_tiny_checkpoint_transcript(samples_dir, tiny_checkpoint, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "G4MEDIA_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}

    def g4media(*args):
        return subprocess.run([sys.executable, "-m", "mediapipe_g4", *args], capture_output=True, text=True,
                              check=False, timeout=600, env=env, stdin=subprocess.DEVNULL)

    made = g4media("transcribe", str(samples_dir / "phone_call.wav"), "--model", str(tiny_checkpoint),
                   "-o", str(tmp_path / "out"), "--format", "json")
    assert made.returncode == 0, made.stderr
    out = g4media("eval", str(tmp_path / "out"), str(samples_dir), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    (r,) = report["recordings"]
    assert r["recording"] == "phone_call.wav" and r["reference"] == "phone_call"
    assert r["wer"]["value"] >= 0 and r["wer"]["ref_words"] == REF_WORDS_PHONE_CALL and r["cpwer"]["value"] >= 0
    assert 0 <= r["der"]["value"] < 10 and 0 <= r["jer"]["value"] <= 1
    assert r["speakers"]["reference"] == 2 and isinstance(r["speakers"]["result"], int)
    assert r["speakers"]["error"] == r["speakers"]["result"] - 2
    # `transcribe` names no one: no naming failures (they were 0/2, and pulled the overall figure down)
    assert r["naming"]["status"] == "skipped" and report["overall"]["naming"]["total"] == 0
    assert r["notes"] is None and r["speed"]["rtf"] > 0 and "transcribe" in r["speed"]["timings"]
    assert report["overall"]["wer"]["value"] == r["wer"]["value"]
    table = g4media("eval", str(tmp_path / "out"), str(samples_dir))
    assert table.returncode == 0 and "phone_call.wav" in table.stdout and "overall (1)" in table.stdout
    assert "skipped" in table.stdout.splitlines()[2]
    # a name typed into its X.json is scored
    made = json.loads((tmp_path / "out" / "phone_call.json").read_text())
    made["speakers"][0]["name"] = "Alice"
    (tmp_path / "out" / "phone_call.json").write_text(json.dumps(made))
    (r,) = json.loads(g4media("eval", str(tmp_path / "out"), str(samples_dir), "--json").stdout)["recordings"]
    assert r["naming"]["total"] == 2 and 0 <= r["naming"]["correct"] <= 2


def test_a_reference_paired_by_hand_that_speaks_past_the_recording_is_said(tmp_path, caplog):
    result = json.loads(FIXTURE.read_text())  # the standup, 64 s
    short = {**result, "source": {**result["source"], "duration": 30.0},
             "segments": [s for s in result["segments"] if s["end"] <= 30], "keyframes": []}
    (tmp_path / "cut.json").write_text(json.dumps(short))
    with caplog.at_level("WARNING", logger="mediapipe_g4"):
        evaluate(tmp_path / "cut.json", SAMPLES / "standup.rttm")
    assert "has speech until 63 s but cut.json is 30 s long" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="mediapipe_g4"):
        evaluate(FIXTURE, SAMPLES / "standup.rttm")
    assert "is it the reference of another recording" not in caplog.text


# --------------------------------------------------------------------------- agreement with the field's scorers


@pytest.mark.parametrize("collar", [0.0, 0.25])
def test_one_speakers_overlapping_or_touching_turns_are_one_stretch_as_in_md_eval(collar):
    """A reference split into sentences that overlap (or touch) scored a perfect result 5.6 % DER: pyannote counted
    the overlap twice and collared every seam; NIST md-eval merges one speaker's turns first."""
    split = [Turn(0, 6, "Alice"), Turn(5, 10, "Alice"), Turn(10, 14, "Bob"), Turn(14, 20, "Bob")]
    perfect = [Turn(0, 10, "S1"), Turn(10, 20, "S2")]
    for ref, hyp in ((split, perfect), (perfect, split)):
        scored = diarization_errors(ref, hyp, 20, collar=collar)
        assert scored["der"] == 0 and scored["jer"] == 0 and scored["total"] == pytest.approx(20 - 4 * collar)


def test_scripts_without_spaces_are_scored_by_character():
    """Chinese, Japanese, Thai: a clause between punctuation was one "word", so one wrong character made it all
    wrong (50 % for one extra character); each character is a word of its own, words of other scripts stay."""
    assert normalize_text("我们今天开会，讨论预算了。", "Chinese") == list("我们今天开会讨论预算了")
    assert normalize_text("今日はKubernetesの会議", "Japanese") == ["今", "日", "は", "kubernetes", "の", "会", "議"]
    one_extra = wer([utt("A", "我们今天开会，讨论预算。")], [utt("A", "我们今天开会，讨论预算了。")], "Chinese")
    assert (one_extra.errors, one_extra.ref_words) == (1, 10)


def test_a_corpus_channel_letter_is_no_name():
    ref = Reference("x", turns=(Turn(0, 1, "A"), Turn(1, 2, "B")))
    assert [ref.name_of(label) for label in ("A", "b", "sw02001-A", "Bo", "Alice", "spk_0")] == \
        [None, None, None, "Bo", "Alice", None]


def test_references_with_a_byte_order_mark_and_two_results_of_one_name(tmp_path, caplog):
    """A Windows editor's BOM hid the first RTTM/STM line (a speaker gone: DER 105 %). A reference that pairs by
    name with two results (a batch's dated folders) scored one meeting against the other's: it pairs with none."""
    result = json.loads(FIXTURE.read_text())
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "standup.rttm").write_text("\ufeff" + (SAMPLES / "standup.rttm").read_text(), encoding="utf-8")
    assert evaluate(FIXTURE, refs / "standup.rttm")["recordings"][0]["der"]["value"] == 0
    stm = refs / "standup.stm"
    stm.write_text("\ufeff" + (SAMPLES / "standup.stm").read_text(), encoding="utf-8")
    assert next(iter(load_references(stm))) == "standup"
    out = tmp_path / "out"
    for day in ("mon", "tue"):
        (out / day).mkdir(parents=True)
        (out / day / "standup.json").write_text(json.dumps(result))
    with pytest.raises(EvalError, match="no result in .* has a reference"):
        evaluate(out, refs)
    assert "pairs with no reference: 'standup' has the name of several results" in caplog.text
    (refs / "mon").mkdir()
    shutil.move(refs / "standup.rttm", refs / "mon" / "standup.rttm")  # at its result's path: paired
    shutil.move(stm, refs / "mon" / "standup.stm")
    assert [r["reference"] for r in evaluate(out, refs)["recordings"]] == ["mon/standup"]


def test_overall_speed_counts_only_recordings_with_a_time_and_a_duration():
    from mediapipe_g4.evaluate import overall

    def row(total, duration):
        return {"duration": duration, "speakers": {"error": None},
                "speed": {"timings": {"total": total}, "duration": duration or 0.0,
                          "rtf": total / duration if duration else None}}

    assert overall([row(10.0, 100.0), row(50.0, None)])["speed"]["rtf"] == 0.1  # was 0.6


def test_a_translated_transcript_is_normalized_in_the_language_it_is_in():
    from mediapipe_g4.evaluate import evaluate_recording

    result = json.loads(FIXTURE.read_text())
    result["options"] = {"plan": {"language": "French", "translate_to": "English"}}
    result["segments"] = [{"start": 0, "end": 5, "speaker": "S1", "text": "We're meeting at 3 today"}]
    scored = evaluate_recording(result, Reference("x", utterances=(utt("A", "we are meeting at three today", 0, 5),)))
    assert scored["wer"]["errors"] == 0  # English rules: "we're" = "we are", "3" = "three"


def test_stretches_an_stm_leaves_out_of_scoring_are_not_scored(tmp_path):
    """TED-LIUM marks a talk's unreliable stretches with the words `ignore_time_segment_in_scoring` under the
    speaker's own name (they were scored as a reference word); sclite leaves what is said there out of the WER."""
    from mediapipe_g4.evaluate import evaluate_recording

    stm = tmp_path / "talk.stm"
    stm.write_text("talk 1 inter_segment_gap 0 5 <o,,unknown> ignore_time_segment_in_scoring\n"
                   "talk 1 Ann 5 10 <o,f0,female> thank you all for coming\n"
                   "talk 1 Ann 10 20 <o,f0,female> ignore_time_segment_in_scoring\n"
                   "talk 1 Ann 20 25 <o,f0,female> now the results\n")
    (ref,) = load_references(stm).values()
    assert ref.excluded == ((0.0, 5.0), (10.0, 20.0))
    assert [u.text for u in ref.utterances] == ["thank you all for coming", "now the results"]
    assert [(t.start, t.end, t.speaker) for t in ref.turns] == [(5, 10, "Ann"), (10, 20, "Ann"), (20, 25, "Ann")]
    result = json.loads(FIXTURE.read_text())
    result["options"] = {"plan": {"language": "English"}}
    result["segments"] = [{"start": 1, "end": 4, "speaker": "S1", "text": "music plays loudly"},
                          {"start": 5, "end": 10, "speaker": "S1", "text": "Thank you all for coming."},
                          {"start": 11, "end": 19, "speaker": "S1", "text": "a song we could not hear"},
                          {"start": 20, "end": 25, "speaker": "S1", "text": "Now, the results!"}]
    scored = evaluate_recording(result, ref)
    assert (scored["wer"]["errors"], scored["wer"]["ref_words"]) == (0, 8)
    assert scored["cpwer"]["errors"] == 0
    result["segments"][1]["text"] = "Thank you for coming."  # a word outside them still counts
    assert evaluate_recording(result, ref)["wer"]["errors"] == 1
    # one long segment across a stretch: its words there are left out, the rest scored (it was kept or dropped
    # whole, by its middle)
    result["segments"] = [{"start": 5, "end": 23, "speaker": "S1",  # 18 words in 18 s: ten in 10-20 s
                           "text": "thank you all for coming la la la la la la la la la la now the results"}]
    scored = evaluate_recording(result, ref)
    assert (scored["wer"]["errors"], scored["wer"]["ref_words"]) == (0, 8), scored["wer"]
