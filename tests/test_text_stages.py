"""Transcript cleaning, speaker naming and notes parsing on scripted model answers."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from fake_engine import ScriptedEngine

from mediapipe_g4.answers import CachedEngine, request_key
from mediapipe_g4.engine import AudioPart, EngineRequest, TextPart, clean_response
from mediapipe_g4.errors import G4Error
from mediapipe_g4.names import (
    build_speakers,
    names_prompt,
    parse_name_overrides,
    parse_names,
)
from mediapipe_g4.notes_schema import (
    NotesParseError,
    ground_notes,
    parse_notes,
    parse_time,
    resolve_owner,
)
from mediapipe_g4.records import Segment
from mediapipe_g4.transcript import clean_transcript_text, segments_from_answers

SEGMENTS = [
    Segment(0.5, 6.0, "S1", "Good morning everyone. Bob, do you want to start?"),
    Segment(6.4, 14.0, "S2", "Sure. The payment service migration is done."),
    Segment(14.3, 20.0, "S1", "Thanks, Bob. Carol, how is the mobile release?"),
    Segment(20.5, 30.0, "S3", "We ship on Friday. I'm Carol, by the way, for the new folks."),
]


def req(start, end, speaker, kind="transcribe"):
    return EngineRequest(kind=kind, parts=(TextPart("t"), AudioPart(start, end)), start=start, end=end, speaker=speaker)


# --------------------------------------------------------------------------- transcript


@pytest.mark.parametrize("raw, clean", [
    ("  Hello   there. ", "Hello there."),
    ("yes yes yes yes yes yes yes", "yes"),
    ("We agreed. Thank you. Thank you. Thank you. Thank you. Thank you.", "We agreed. Thank you."),
    ("hahahahahahahahahahahaha", "haha"),
    ("...  ♪ ♪", ""),
    ("", ""),
    ("Line one\nline two", "Line one line two"),
    ("[Music]", ""), ("(laughs) [applause]", ""), ("*coughs*", ""), ("【音乐】", ""),  # sounds, no one's speech
    ("Okay, fine (laughs).", "Okay, fine (laughs)."), ("The [redacted] plan", "The [redacted] plan"),
    ("[Soft music playing]", ""), ("(Okay.)", "(Okay.)"), ("*Yes*", "*Yes*"),
    ("(Yes, I agree [laughs])", "(Yes, I agree [laughs])"), ("[No speech]", ""), ("(I laugh at that)", "(I laugh at that)"),
    # quotes around the whole answer go; quotes that are part of the speech stay (they were stripped at the ends)
    ('"Hello there."', "Hello there."), ("“Hello there.”", "Hello there."), ("«Bonjour.»", "Bonjour."),
    ('"Hello there.', "Hello there."), ("He said 'yes'", "He said 'yes'"), ("'Tis the season.", "'Tis the season."),
    ('"Ship it", she said, "today."', '"Ship it", she said, "today."'), ("'", ""),
    # what the model puts before the words was kept as speech
    ("Transcription: Hello there.", "Hello there."), ("**Transcription:** Hello there.", "Hello there."),
    ("Sure, here is the transcription: Hello.", "Hello."), ("Speaker 1: Hello there.", "Hello there."),
    ("[00:03] Hello there.", "Hello there."), ("[00:03 - 00:05] S2: Hello.", "Hello."),
    ("s 2: Hello.", "Hello."), ("[00:03.5] Speaker 2: Hello.", "Hello."), ("Speakers: Hello.", "Speakers: Hello."),
    ('Transcription: "Hello there."', "Hello there."), ("Transcription:", ""),
    ("The transcription: is not done.", "The transcription: is not done."), ("At 10:30: we meet.", "At 10:30: we meet."),
    ("Here is the transcript:\nWe ship.", "We ship."), ("Certainly! Here is the transcription:\nWe ship.", "We ship."),
    ("Okay, here is the English transcription: Hi.", "Hi."), ("The transcription is: Hi.", "Hi."),
    ("Transcribed text: Hi.", "Hi."), ("Okay, here we go.", "Okay, here we go."),
    # an answer that says there is no speech, instead of none: it was kept as someone's words
    ("There is no speech in this audio.", ""), ("No speech detected.", ""), ("(No speech detected)", ""),
    ("The audio is silent.", ""), ("I'm sorry, but the audio does not contain any speech.", ""),
    ("There is no speech in the audio, only background noise.", ""),
    ("There is no speech here, says Bob, the mic is muted.", "There is no speech here, says Bob, the mic is muted."),
    ("No speech from the CEO today.", "No speech from the CEO today."),
    ("[speaking German]", ""), ("[Foreign language]", ""), ("[indistinct chatter]", ""), ("<noise>", ""),
    ("We ship [unclear] Friday.", "We ship [unclear] Friday."),
    # loops of longer phrases, and a loop's last copy cut off by the token budget
    ("Thank you for watching. " * 3, "Thank you for watching."), ("Thank you. " * 4 + "Thank", "Thank you."),
    ("A sentence the model repeats when it is stuck on silence. " * 6, "A sentence the model repeats when it is stuck on silence."),
    ("Can you hear me? Can you hear me?", "Can you hear me? Can you hear me?"),
    # markdown no one said, and the model's remark after the words
    ("```\nWe ship Friday.\n```", "We ship Friday."), ("Transcription:\n```text\nHello.\n```", "Hello."),
    ("**We ship Friday.**", "We ship Friday."), ("We ship **Friday**.", "We ship Friday."),
    ("We ship Friday. (Note: some parts were unclear.)", "We ship Friday."),
    ("Take a note: ship Friday.", "Take a note: ship Friday."), ("2 * 3 * 4 is 24", "2 * 3 * 4 is 24"),
    # more ways of saying there is no speech: these were kept as a speaker's words
    ("There is no speech in the provided audio.", ""), ("This audio segment contains no speech.", ""),
    ("There is no discernible speech in this audio segment.", ""), ("The audio contains only background noise.", ""),
    ("I'm sorry, but I can't transcribe this audio as it contains only background noise.", ""),
    ("Unfortunately, the audio is too unclear to transcribe.", ""), ("(no audible speech)", ""), ("[pause]", ""),
    ("(Silence)", ""), ("Silence!", "Silence!"), ("Silence is golden.", "Silence is golden."),  # a chair may say it
    ("I cannot transcribe this audio, he said, without a headset.",
     "I cannot transcribe this audio, he said, without a headset."),
    # the prompt echoed, labels and times in other shapes, a translation no one asked for: none of it was said
    ("Transcribe the following speech segment in its original language.\n\nHola a todos.", "Hola a todos."),
    ("Hello.\nSpeaker 2: Hi there.", "Hello. Hi there."), ("SPEAKER_00: Hello everyone.", "Hello everyone."),
    ("(00:01) Hello", "Hello"), ("[0.00s - 2.50s] Hello", "Hello"), ("00:01 is the time", "00:01 is the time"),
    ("Language: Spanish\nTranscription: Hola a todos.", "Hola a todos."),
    ("**Transcription (Spanish):** Hola a todos.", "Hola a todos."),
    ("Hola a todos.\n\nTranslation: Hello everyone.", "Hola a todos."),
    ("We need a translation: French and German.", "We need a translation: French and German."),
    ("```\nHola a todos.\nTranslation: Hello everyone.\n```", "Hola a todos."),  # the fence was left in
    ("Okay.\nThe translation: we finish it Friday.", "Okay. The translation: we finish it Friday."),
    ("Language: English is hard.", "Language: English is hard."), ("Language: Spanish\n\nHola a todos.", "Hola a todos."),
    ("Hola, ¿qué tal?\n\nEnglish translation: Hello, how are you?", "Hola, ¿qué tal?"),
])
def test_clean_transcript_text(raw, clean):
    assert clean_transcript_text(raw) == clean


def test_thought_blocks_and_special_tokens_are_stripped():
    raw = "<|channel>thought\nLet me listen carefully.<channel|>Hello Bob.<turn|><eos><pad><pad>"
    assert clean_response(raw) == "Hello Bob."
    assert clean_response("<|channel>thought\nunfinished thinking") == ""


def test_split_turns_are_joined_and_empty_clips_dropped():
    requests = [req(0.0, 29.5, "S1"), req(29.5, 41.0, "S1"), req(41.6, 45.0, "S2"), req(46.0, 47.0, "S1")]
    answers = ["First half of a long turn", "and its second half.", "", "Okay."]
    segs = segments_from_answers(requests, answers)
    assert [(s.start, s.end, s.speaker) for s in segs] == [(0.0, 41.0, "S1"), (46.0, 47.0, "S1")]
    assert segs[0].text == "First half of a long turn and its second half."


@pytest.mark.parametrize("answer, kept", [
    ("Hola a todos.\nEnglish: Hello everyone.", "Hello everyone."),
    ("Hola a todos.\n**English:** Hello everyone.", "Hello everyone."),  # was "** Hello everyone."
    ("Hola a todos.\nenglish: Hello everyone.", "Hello everyone."),  # was both languages in one
    ("Hola a todos.\nHello everyone.", "Hello everyone."),  # no marker: the last line
    ("Dijo English: no.\nEnglish: He said English: no.", "He said English: no."),  # the speech says the marker
    ("Hola a todos.", "Hola a todos."),  # no translation came: the speech, not nothing
    # the translation labelled as one: the label was kept as words, or both languages were
    ("Hola a todos.\nTranslation: Hello everyone.", "Hello everyone."),
    ("Hola a todos.\nEnglish translation: Hello everyone.", "Hello everyone."),
    ("**Transcription (Spanish):** Hola a todos.\n\n**Translation (English):** Hello everyone.", "Hello everyone."),
    # a translation that says "translation:" is the speech's word, not the marker
    ("Necesitamos una mejor traducción. English: We need a better translation: this one is wrong.",
     "We need a better translation: this one is wrong."),
    ("Hola, ¿cómo estás? Translation: Hello, how are you?", "Hello, how are you?"),  # on one line
])
def test_translation_answers_keep_the_translation(answer, kept, caplog):
    segs = segments_from_answers([req(0, 3, "S1")], [answer], translate_to="English")
    assert segs[0].text == kept
    # An answer with no translation in it is said: its text is in the language spoken.
    assert ("1 of 1 clips came back without a translation into English" in caplog.text) == (answer == kept)


# --------------------------------------------------------------------------- names


def test_names_need_evidence_in_the_transcript():
    answer = json.dumps({
        "S2": {"name": "Bob", "quote": "Thanks, Bob", "time": 14.3},
        "S3": {"name": "Carol", "quote": "I'm Carol", "time": "00:20"},
        "S1": {"name": "Alice", "quote": "Alice said hello", "time": 1},  # invented: not in the transcript
    })
    found = parse_names(f"Here you go:\n```json\n{answer}\n```", SEGMENTS)
    assert set(found) == {"S2", "S3"}
    assert found["S2"] == {"name": "Bob", "quote": "Thanks, Bob", "time": 14.3}
    # a speaker id written as the transcript's reader would (it was dropped)
    found = parse_names(json.dumps({"Speaker 2": {"name": "Bob", "quote": "Thanks, Bob", "time": 14.3}}), SEGMENTS)
    assert found["S2"]["name"] == "Bob"


@pytest.mark.parametrize("answer", [
    "no JSON here", "[1, 2]",
    json.dumps({"S2": {"name": "Robert", "quote": "Thanks, Bob", "time": 14}}),  # quote lacks the name
    json.dumps({"S9": {"name": "Bob", "quote": "Thanks, Bob", "time": 14}}),  # unknown speaker
    json.dumps({"S2": {"name": "Bob", "quote": "Thanks, Bob", "time": 900}}),  # far from the quote
    json.dumps({"S2": {"name": "Speaker 2", "quote": "Sure", "time": 6}}),
    # a role, not a name: "the manager" was taken as S1's name
    json.dumps({"S1": {"name": "the mobile release", "quote": "how is the mobile release", "time": 14}}),
    json.dumps({"S1": {"name": "The Mobile Release", "quote": "how is the mobile release", "time": 14}}),
])
def test_names_without_evidence_are_dropped(answer):
    assert parse_names(answer, SEGMENTS) == {}


def test_a_name_goes_to_the_one_it_is_said_to_not_the_one_who_says_it():
    """"Thanks, Bob" is S1's line, said to S2: it made S1 Bob (and, taken first, left S2 without the name). A name
    said in passing is no one's; one's own name needs an introduction ("I'm Carol")."""
    segments = [*SEGMENTS, Segment(31.0, 35.0, "S4", "I talked to Dave about it."), Segment(36.0, 40.0, "S1", "Okay.")]
    answer = {"S1": {"name": "Bob", "quote": "Thanks, Bob", "time": 14.3},  # the one who thanks Bob
              "S2": {"name": "Bob", "quote": "Thanks, Bob", "time": 14.3},
              "S4": {"name": "Dave", "quote": "I talked to Dave", "time": 31},  # a mention, by S4 itself
              "S3": {"name": "Carol", "quote": "I'm Carol", "time": 20}}
    found = parse_names(json.dumps(answer), segments)
    assert {sid: f["name"] for sid, f in found.items()} == {"S2": "Bob", "S3": "Carol"}
    # Said to the one who speaks next, or introduced in other words and languages:
    assert parse_names(json.dumps({"S3": {"name": "Carol", "quote": "Carol, how is", "time": 14}}), segments)
    for text, name in (("Hi, this is Alice from Acme.", "Alice"), ("Alice here, sorry I'm late.", "Alice"),
                       ("Hola, me llamo Lucía.", "Lucía"), ("Guten Tag, ich bin Jürgen.", "Jürgen"),
                       ("Hallo, hier ist Jürgen aus Berlin.", "Jürgen")):
        one = [Segment(0.0, 4.0, "S1", text), Segment(4.0, 8.0, "S2", "Welcome.")]
        assert parse_names(json.dumps({"S1": {"name": name, "quote": text, "time": 0}}), one)["S1"]["name"] == name
        assert parse_names(json.dumps({"S2": {"name": name, "quote": text, "time": 0}}), one) == {}  # S1's own


@pytest.mark.parametrize("line, named", [
    ("Good morning. Carol is out sick today, so she sends her update by mail.", False),  # about Carol, not to her
    ("Let's ask Carol.", False), ("Carol's update came by mail.", False),
    ("Carol, can you start?", True), ("Thanks, Carol.", True), ("Thanks Carol", True), ("Over to you Carol!", True),
    ("Right, Carol?", True), ("Спасибо, Carol.", True),
    # said to her without a comma, as speech recognition writes it, or with her surname: these were refused
    ("Thanks Carol for the update", True), ("Okay Carol", True), ("So Carol, the update?", True),
    ("Hi Carol how are you doing", True), ("Carol - your turn", True), ("Thanks, Carol Jones.", True),
    ("So Carol left early.", False), ("Did you ask Carol?", False),
    # said about her, though after a word a greeting may hold, or "and": these were taken as said to her
    ("This morning Carol pushed the fix to production.", False), ("The people on call are Alice and Carol.", False),
    ("Thanks Carol's team for the numbers.", False), ("Thanks a lot Carol.", True), ("Guten Morgen Carol.", True),
    ("Carol, Dave and I met yesterday.", False), ("Carol, Dave, Erin: the numbers are in.", False),
    ("Carol, Dave wants the numbers.", True),  # to Carol, about Dave
])
def test_a_name_said_about_someone_is_not_the_next_speakers(line, named):
    """A name said in the turn before S2's was taken as S2's whatever the sentence did with it: S2, who introduced
    himself as Dave, became Carol, who was out sick."""
    segments = [Segment(0, 8, "S1", line), Segment(8.5, 20, "S2", "Okay. Hi everyone, this is Dave from the platform."),
                Segment(21, 30, "S1", "Thanks.")]
    answer = json.dumps({"S2": {"name": "Carol", "quote": line, "time": 0}})
    assert bool(parse_names(answer, segments)) == named


def test_speakers_default_names_overrides_and_talk_time():
    found = {"S2": {"name": "Bob", "quote": "Thanks, Bob", "time": 14.3}}
    speakers = build_speakers(SEGMENTS, found, parse_name_overrides("S3=Carol Jones"))
    assert [(s.id, s.name) for s in speakers] == [("S1", "Speaker 1"), ("S2", "Bob"), ("S3", "Carol Jones")]
    assert speakers[0].talk_time == pytest.approx(5.5 + 5.7)
    assert speakers[1].evidence[0]["quote"] == "Thanks, Bob"


@pytest.mark.parametrize("bad", ["Alice", "S1:Alice", "X1=Bob", "S1=", "S1=Alice;S2=Bob", "S1=Alice,s1=Bob",
                                 "left=Ann,track1=Bea"])
def test_name_overrides_reject_bad_syntax(bad):
    with pytest.raises(G4Error, match="--names"):
        parse_name_overrides(bad)


def test_names_prompt_lists_ids_and_lines():
    prompt = names_prompt(SEGMENTS)
    assert "S1, S2, S3" in prompt and "[00:14] S1: Thanks, Bob." in prompt
    hinted = names_prompt(SEGMENTS, vocabulary=("Roberto",))
    assert hinted.replace("\nNames and terms that may be said, spelled as they should be written: Roberto.", "") == prompt


# --------------------------------------------------------------------------- notes


GOOD_NOTES = {
    "summary": "The team reviewed the payment migration and the mobile release.",
    "decisions": ["Ship the mobile release on Friday", {"text": "Keep the old API for a week", "time": "00:10"}],
    "action_items": [
        {"text": "Write the release notes", "owner": "Carol", "due": "Friday", "time": 21},
        {"text": "Tell support", "owner": "Dave", "due": None, "time": 500},
    ],
    "chapters": [{"start": 3, "title": "Payments"}, {"start": "00:21", "title": "Mobile release"}],
    "questions": ["Who reviews the release?"],
}


def test_parse_and_ground_good_notes():
    notes = parse_notes("```json\n" + json.dumps(GOOD_NOTES) + "\n```")
    grounded = ground_notes(notes, SEGMENTS, {"S1": "Speaker 1", "S2": "Bob", "S3": "Carol"})
    assert grounded["decisions"][0] == {"text": "Ship the mobile release on Friday", "time": None}
    assert grounded["decisions"][1]["time"] == 6.4  # 00:10 lies in Bob's segment
    carol, dave = grounded["action_items"]
    assert carol == {"text": "Write the release notes", "owner": "S3", "due": "Friday", "time": 20.5}
    assert dave["owner"] is None and dave["time"] is None  # not a speaker; not a time in the meeting
    assert [c["start"] for c in grounded["chapters"]] == [0.5, 20.5]  # the first chapter opens the meeting
    assert grounded["questions"] == [{"text": "Who reviews the release?", "time": None}]


@pytest.mark.parametrize("answer, why", [
    ("I could not find anything to summarize.", "no JSON object"),
    ('{"summary": "x", "decisions": [', "not closed"),
    # Cut off after a closed item: the last "}" is the item's; json_repair would close the rest and lose it.
    ('{"summary": "x", "action_items": [{"text": "Write docs"}, {"text": "Fix the bu', "not closed"),
    ('{ ] }', "does not parse"),
    ('{"minutes": "x"}', "none of the notes' fields"),
    ("Here: {qAak lid ]]] }", "does not parse"),  # what json_repair makes of it is no object
    ('{"summary": "x", "action_items": [{"owner": "Bob"}]}', "action_items"),
])
def test_malformed_notes_say_why(answer, why):
    with pytest.raises(NotesParseError, match=why):
        parse_notes(answer)


def test_chapters_without_times_cost_only_the_chapters():
    """Chapters as bare titles (no time to place them at) failed the whole answer, and, repaired the same way,
    lost the summary, decisions and action items with them."""
    notes = parse_notes(json.dumps({"summary": "We met.", "decisions": ["Ship Friday"],
                                    "chapters": ["Payment migration", {"title": "no start"}]}))
    assert notes.summary == "We met." and len(notes.decisions) == 1 and notes.chapters == []


@pytest.mark.parametrize("value, seconds", [
    ("02:10-02:20", 130.0), ("75 to 90", 75.0), ("~75", 75.0), ("about 1:00", 60.0), ("1:15 min", 75.0),
    ("[00:05] - [00:09]", 5.0), ("-5", None), ("soon", None),
])
def test_times_given_as_ranges_or_about_read_as_their_start(value, seconds):
    assert parse_time(value) == seconds


def test_notes_items_that_say_there_are_none_are_no_items():
    """"No formal decisions were made." was shown as a decision; "None specified" as a due date; "N/A" as the
    summary; two chapters of one topic in a row as two chapters."""
    notes = parse_notes(json.dumps({
        "summary": "N/A", "decisions": ["No formal decisions were made.", "Ship on Friday"],
        "questions": ["None raised."], "action_items": [{"text": "None"},
                                                        {"text": "Fix it", "due": "Not specified in the meeting"}],
        "chapters": [{"start": 1, "title": "Status"}, {"start": 15, "title": "status"}, {"start": 21, "title": "Mobile"}],
    }))
    assert notes.summary == "" and [d.text for d in notes.decisions] == ["Ship on Friday"] and notes.questions == []
    assert [(a.text, a.due) for a in notes.action_items] == [("Fix it", None)]
    grounded = ground_notes(notes, SEGMENTS, {})
    assert [c["title"] for c in grounded["chapters"]] == ["Status", "Mobile"]
    for kept in ("No, we decided to ship on Friday.", "Nothing ships before the review.",
                 "Keine weiteren Rabatte für Kunde X", "Keine Entscheidung über das Budget vor März"):
        assert parse_notes(json.dumps({"decisions": [kept]})).decisions[0].text == kept
    # in the meeting's language, or as a sentence: these were shown as a decision and an open question
    for none in ("Keine Entscheidungen getroffen.", "Ninguna", "Aucune décision n'a été prise.",
                 "There were no decisions.", "Nessuna domanda."):
        assert parse_notes(json.dumps({"summary": "S", "decisions": [none], "questions": [none]})).decisions == []


def test_an_item_the_notes_list_twice_is_shown_once():
    notes = parse_notes(json.dumps({"decisions": ["Ship on Friday.", "Drop the old page", "ship on friday"],
                                    "action_items": [{"text": "Fix it", "owner": "Bob"}, {"text": "Fix it."}],
                                    "questions": ["Who reviews?", "Who reviews?"]}))
    grounded = ground_notes(notes, SEGMENTS, {"S2": "Bob"})
    assert [d["text"] for d in grounded["decisions"]] == ["Ship on Friday.", "Drop the old page"]
    assert [(a["text"], a["owner"]) for a in grounded["action_items"]] == [("Fix it", "S2")]
    # one task for two people is two items
    notes = parse_notes(json.dumps({"action_items": [{"text": "Review the PR", "owner": "Bob", "due": "Friday"},
                                                     {"text": "Review the PR", "owner": "Carol", "due": "Monday"}]}))
    assert len(ground_notes(notes, SEGMENTS, {"S2": "Bob", "S3": "Carol"})["action_items"]) == 2
    assert [q["text"] for q in grounded["questions"]] == ["Who reviews?"]


@pytest.mark.parametrize("answer", [
    '{"summary": "x", "decisions": ["Ship it",],}',  # trailing commas
    "{'summary': 'x', 'decisions': ['Ship it']}",  # single quotes
    '{"summary": "x\nand more", "decisions": ["Ship it"], "questions": None}',  # a raw newline, Python's None
    '{"summary": "He said "ship it" today", "decisions": ["Ship it"]}',  # an unescaped quote
    '```json\n{"summary": "x", // the gist\n "decisions": ["Ship it"]}\n```',  # a comment, in a fence
    # one unescaped quote turned the strings inside out: the whole answer looked cut off, and was asked again
    '{"summary": "We ordered the 27" monitor.", "decisions": ["Ship it"], "questions": []}',
    # a draft in one fence, the answer in the next: the draft was read
    '```json\n{"summary": "draft"}\n```\nCorrected:\n```json\n{"summary": "x", "decisions": ["Ship it"]}\n```',
])
def test_notes_with_the_usual_json_slips_are_read_without_asking_again(answer):
    notes = parse_notes(answer)
    assert notes.summary and [d.text for d in notes.decisions] == ["Ship it"]


@pytest.mark.parametrize("value, seconds", [(83, 83.0), ("83.5", 83.5), ("01:23", 83.0), ("[1:02:03]", 3723.0),
                                            (None, None), ("soon", None), (-4, None),
                                            # as models also write them: these were null
                                            ("754s", 754.0), ("754 seconds", 754.0), ("12m34s", 754.0),
                                            ("1h 2m 3s", 3723.0), ("12 min", 720.0), ("minute 12", 720.0),
                                            ("00:12:34,5", 754.5), ("12", 12.0), ("m", None), ("s", None),
                                            ("12:34 pm", None),
                                            # past the first hour, as a model asked for mm:ss writes it; said with
                                            # "at" or "(approx.)": these were null, and chapters were dropped
                                            ("102:10", 6130.0), ("at 1:42:10", 6130.0), ("1:42:10 (approx.)", 6130.0),
                                            ("at around 12:30", 750.0), ("1000:00", None),
                                            ("approximately 1:15", 75.0), ("roughly 1:15", 75.0)])
def test_parse_time(value, seconds):
    assert parse_time(value) == seconds


# --------------------------------------------------------------------------- answer cache


def test_cached_engine_reuses_answers_and_loads_the_model_lazily(tmp_path):
    made = []

    def make():
        made.append(1)
        return ScriptedEngine(lambda r: f"text {r.start:.0f}")

    requests = [req(float(i), float(i) + 1, "S1") for i in range(5)]
    first = CachedEngine(make, tmp_path, chunk_size=2)
    assert first.generate(requests) == [f"text {i}" for i in range(5)]
    assert first.generated == 5 and len(list(tmp_path.glob("*.json"))) == 5
    second = CachedEngine(make, tmp_path, chunk_size=2)
    assert second.generate(requests) == first.generate(requests)
    assert second.generated == 0 and len(made) == 1  # never loaded the model the second time
    fresh = CachedEngine(make, tmp_path, fresh=True)
    fresh.generate(requests[:1])
    assert fresh.generated == 1


def test_a_resumed_run_says_how_many_answers_it_reused(tmp_path, caplog):
    requests = [req(float(i), float(i) + 1, "S1") for i in range(5)]
    CachedEngine(lambda: ScriptedEngine(lambda r: "text"), tmp_path).generate(requests[:2])  # then interrupted
    with caplog.at_level("INFO", logger="mediapipe_g4"):
        CachedEngine(lambda: ScriptedEngine(lambda r: "text"), tmp_path).generate(requests)
    assert "transcribe: 2 of 5 answers from the work folder" in caplog.text and "3 to generate" in caplog.text


def test_answers_reach_the_pipeline_without_control_characters(tmp_path):
    raw = "Hello\x00 wor\x1bld\x7f,\tsaid\x85 Bob.\nNext\ufffd"  # NUL, ESC, DEL, C1, a broken byte sequence
    requests = [req(0.0, 1.0, "S1")]
    first = CachedEngine(lambda: ScriptedEngine(lambda r: raw), tmp_path)
    assert first.generate(requests) == ["Hello world,\tsaid Bob.\nNext"]
    saved = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert saved["answer"] == raw  # the cache keeps what the model said
    again = CachedEngine(lambda: pytest.fail("the cached answer is reused"), tmp_path)
    assert again.generate(requests) == first.generate(requests)


def test_request_key_changes_with_what_the_model_sees():
    base = req(1.0, 2.0, "S1")
    assert request_key(base) == request_key(req(1.0, 2.0, "S2"))  # the speaker label is not in the prompt
    assert request_key(base) != request_key(req(1.0, 2.5, "S1"))
    assert request_key(base) != request_key(req(1.0, 2.0, "S1", kind="notes"))
    seeded = [replace(base, settings=replace(base.settings, seed=s)) for s in (0, 1)]
    assert len({request_key(base), *map(request_key, seeded)}) == 3  # another seed, another answer


def test_a_name_for_a_speaker_that_is_not_there_is_said():
    from mediapipe_g4.names import resolve_side_names

    names, problems = resolve_side_names({"S1": "Ann", "S9": "Zed"}, {}, ("S1", "S2"))
    assert names == {"S1": "Ann", "S9": "Zed"}
    assert problems == ["--names: there is no speaker S9 (the speakers are S1, S2); 'Zed' names no one"]
    assert resolve_side_names({"S1": "Ann"}, {}, ("S1",)) == ({"S1": "Ann"}, [])


def test_one_item_that_does_not_fit_is_left_out_not_all_the_notes():
    answer = json.dumps({
        "summary": "x",
        "decisions": ["Ship it", None, {"time": "00:10"}],  # an item without text
        "action_items": [{"text": f"Task {i}", "owner": "Bob", "due": 5 if i == 3 else "Friday"} for i in range(100)],
        "chapters": [{"start": 0, "title": "Intro"}, {"title": "no start"}],
    })
    notes = parse_notes(answer)
    assert [d.text for d in notes.decisions] == ["Ship it"] and len(notes.action_items) == 100
    assert notes.action_items[3].due == "5" and [c.title for c in notes.chapters] == ["Intro"]


def test_notes_lose_the_markdown_emphasis_models_add():
    notes = parse_notes(json.dumps({"summary": "We discussed the **release** and __bugs__; 2**3 is 8.",
                                    "decisions": ["Ship **on Friday**"], "chapters": [{"start": 1, "title": "**Intro**"}]}))
    grounded = ground_notes(notes, SEGMENTS, {})
    assert grounded["summary"] == "We discussed the release and bugs; 2**3 is 8."
    assert grounded["decisions"][0]["text"] == "Ship on Friday" and grounded["chapters"][0]["title"] == "Intro"


def test_names_prompt_of_a_long_meeting_measures_its_lines_once(monkeypatch):
    """Cutting a long transcript to the budget took time that grew with the square of its lines (12,000 lines: 7 s):
    each line is measured a bounded number of times."""
    from mediapipe_g4 import names

    measured = [0]

    class Line(str):
        def __len__(self) -> int:
            measured[0] += 1
            return str.__len__(self)

    real = names.transcript_lines
    monkeypatch.setattr(names, "transcript_lines", lambda segments: [Line(ln) for ln in real(segments)])
    segments = [Segment(3.0 * i, 3.0 * i + 2, f"S{i % 3 + 1}", "Thanks Bob, the Kubernetes release ships Friday.")
                for i in range(2000)]
    prompt = names_prompt(segments, max_chars=10_000)
    assert len(prompt) < 11_000 and "[00:00] S1: Thanks Bob" in prompt
    assert measured[0] < 5 * len(segments), measured[0]


def test_a_line_may_name_someone_with_a_capital_inside_a_sentence():
    from mediapipe_g4.names import _may_name

    assert [_may_name(t) for t in ("thanks, McKenzie.", "ask DeShawn", "we use NASA data", "Okay. Fine.")] == \
        [True, True, False, False]


@pytest.mark.parametrize("line, intro, name", [
    ("Мы обсудили бюджет на следующий квартал, и расходы оказались выше, чем мы ожидали.",
     "Здравствуйте, меня зовут Иван.", "Иван"),  # capitals in another script
    ("予算について話しました。" * 5, "私は田中です。", "田中"),  # no capitals: an introduction
    ("预算讨论了很久。" * 5, "大家好。", None),  # neither: the opening lines
])
def test_names_prompt_of_a_long_meeting_in_any_script_keeps_the_lines_that_may_name(line, intro, name):
    """Only lines with an ASCII capital were kept from a long transcript: a Russian or Japanese meeting's naming
    prompt held no transcript at all."""
    segments = [Segment(6.0 * i, 6.0 * i + 5, f"S{i % 2 + 1}", intro if i == 300 else line) for i in range(900)]
    prompt = names_prompt(segments, max_chars=5_000)
    lines = prompt.split("\n\n", 1)[1].splitlines()
    assert len(prompt) < 6_000
    if name:
        assert lines[1] == f"[30:00] S1: {intro}"  # with the lines beside it
    else:
        assert len(lines) > 10 and lines[0].startswith("[00:00] S1:")


@pytest.mark.parametrize("owner, sid", [
    ("Speaker 2", "S2"), ("speaker 1", "S1"), ("S3", "S3"), ("Speaker", None), ("Speaker 9", None),
    ("Carol", "S3"), ("carol smith", "S3"), ("@Carol", "S3"), ("Carol (PM)", "S3"), ("Dr. Carol", "S3"),
    ("Alice and Bob", None), ("unassigned", None), ("N/A", None), ("", None), (None, None),
    # two owners are no one speaker: "Carol and Bob" went to Carol by its first word
    ("Carol and Bob", None), ("Carol & Bob", None), ("Carol/Bob", None), ("Carol, Bob", None), ("Carol or Bob", None),
])
def test_owners_resolve_to_the_speaker_they_name(owner, sid):
    """An owner "Speaker 2" went to S1 when S1 was unnamed too ("Speaker" is both names' first word)."""
    assert resolve_owner(owner, {"S1": "Speaker 1", "S2": "Speaker 2", "S3": "Carol"}) == sid


def test_an_owner_two_speakers_could_be_is_no_one():
    speakers = {"S1": "Bob Smith", "S2": "Bob Jones", "S3": "Dr. Priya Raman"}
    assert resolve_owner("Bob", speakers) is None and resolve_owner("bob jones", speakers) == "S2"
    assert resolve_owner("Priya", speakers) == "S3"


@pytest.mark.parametrize("answer", [
    {"Summary": "S", "Decisions": ["D"], "Action Items": [{"Text": "A", "Owner": "Bob"}], "Questions": ["Q"]},
    {"summary": "S", "key_decisions": ["D"], "actionItems": [{"task": "A", "assignee": "Bob"}], "open_questions": ["Q"]},
    {"summary": "S", "decisions": [{"decision": "D"}], "tasks": [{"description": "A", "owner": {"name": "Bob"}}],
     "questions": [{"question": "Q"}]},
    {"notes": {"summary": "S", "decisions": "D", "next_steps": [{"action": "A", "owner": ["Bob"]}], "questions": ["Q"]}},
])
def test_notes_under_other_names_and_shapes_are_read_not_lost(answer):
    """Keys in another case or by a synonym were ignored (a success without the decisions or action items), and the
    notes inside an outer object, an owner as an object, one decision as a string failed the whole answer."""
    grounded = ground_notes(parse_notes(json.dumps(answer)), SEGMENTS, {"S2": "Bob"})
    assert grounded["summary"] == "S" and [d["text"] for d in grounded["decisions"]] == ["D"]
    assert [(a["text"], a["owner"]) for a in grounded["action_items"]] == [("A", "S2")]
    assert [q["text"] for q in grounded["questions"]] == ["Q"]


def test_chapters_given_as_lines_or_by_other_names_are_read():
    answer = {"summary": "S", "topics": ["00:21 Mobile release", {"time": 3, "topic": "Payments"}, "[00:15] - Thanks"]}
    grounded = ground_notes(parse_notes(json.dumps(answer)), SEGMENTS, {})
    assert grounded["chapters"] == [{"start": 0.5, "title": "Payments"}, {"start": 14.3, "title": "Thanks"},
                                    {"start": 20.5, "title": "Mobile release"}]
    # as ranges, or as a map of times to titles: these lost their chapters, or kept "00:20] Intro" as a title
    for chapters in (["[00:00 - 00:14] Payments", "[00:15 - 00:20] Thanks", "[00:21 - 00:30] Mobile release"],
                     ["00:00-00:14: Payments", "00:15 to 00:20 Thanks", "00:21–00:30 – Mobile release"],
                     {"00:00": "Payments", "00:15": "Thanks", "00:21": "Mobile release"}):
        grounded = ground_notes(parse_notes(json.dumps({"summary": "S", "chapters": chapters})), SEGMENTS, {})
        assert [c["title"] for c in grounded["chapters"]] == ["Payments", "Thanks", "Mobile release"], chapters


@pytest.mark.parametrize("wrap", [
    "<think>The JSON should be like {\"summary\": \"draft\"}.</think>\n{}",  # a thinking block a server left in
    "<|channel>thought\nkeys {summary, decisions}<channel|>{}",
    "{}\nNote: times are in {seconds} from the start.",  # braces in the prose after the object
    "Here are the notes {as asked}:\n{}",
])
def test_braces_around_the_notes_object_do_not_cost_it(wrap):
    """From the first "{" to the last "}" was taken as the object, so braces in prose or a thinking block around it
    made a good answer unreadable (or read a draft instead)."""
    answer = wrap.replace("{}", json.dumps({"summary": "S", "decisions": ["Ship it", {"text": "Test it"}]}), 1)
    notes = parse_notes(answer)
    assert notes.summary == "S" and [d.text for d in notes.decisions] == ["Ship it", "Test it"]


@pytest.mark.parametrize("answer", [
    '{"summary": "", "decisions": [], "action_items": [], "chapters": [], "questions": []}',
    '{"summary": null}', '{"summary": " ", "decisions": [null, ""]}',
])
def test_empty_notes_are_a_failed_answer_not_notes(answer):
    """An answer with every field empty was an "ok" with nothing in it; now it is invalid (repaired once, else the
    notes are "failed" with the reason)."""
    with pytest.raises(NotesParseError, match="empty"):
        parse_notes(answer)


@pytest.mark.parametrize("due, kept", [("N/A", None), ("null", None), ("None", None), ("Not specified", None),
                                       ("TBD", None), ("-", None), ("next Friday", "next Friday"), ("by EOD", "by EOD"),
                                       # with a full stop, in brackets, or in the meeting's language: these were shown
                                       ("Not specified.", None), ("N/A.", None), ("(none)", None),
                                       ("No specific due date", None), ("nicht angegeben", None),
                                       ("no especificado", None), ("Freitag", "Freitag"), ("Q3.", "Q3.")])
def test_a_due_date_that_was_not_said_is_null(due, kept):
    # "N/A", "not specified" were kept as the due date, and shown as one.
    notes = parse_notes(json.dumps({"action_items": [{"text": "Fix it", "due": due}]}))
    assert notes.action_items[0].due == kept


@pytest.mark.parametrize("quote", ["[00:14] S1: Thanks, Bob.", "S1: Thanks, Bob", "[00:14] Thanks, Bob",
                                   "00:14 Speaker 1: Thanks, Bob.", "[00:14.3] s 1: Thanks, Bob."])
def test_a_quote_copied_with_its_lines_time_and_speaker_is_evidence(quote):
    # The quote was looked for with "[00:14] S1:" in it, which no segment's text holds: the name was dropped.
    found = parse_names(json.dumps({"S2": {"name": "Bob", "quote": quote, "time": 14}}), SEGMENTS)
    assert found["S2"]["name"] == "Bob" and found["S2"]["time"] == 14.3



def test_a_name_in_a_script_without_spaces_is_found_in_its_quote():
    # \b around the name: in "我是王伟" there is no word boundary before 王伟, so such names were never found.
    segments = [Segment(0.0, 5.0, "S1", "大家好，我是王伟。"), Segment(5.0, 9.0, "S2", "Hi.")]
    assert parse_names(json.dumps({"S1": {"name": "王伟", "quote": "我是王伟", "time": 0}}), segments)["S1"]["name"] == "王伟"


def test_a_whole_second_is_the_line_the_model_saw_at_that_clock_time():
    """The timeline shows S3's line at 20.5 s as `[00:20]`; the model answers 20, which fell in S1's line before it
    (14.3-20.0) and pointed the decision at what S1 said."""
    notes = parse_notes(json.dumps({"decisions": [{"text": "Ship on Friday", "time": 20},
                                                  {"text": "Migration done", "time": "00:06"},
                                                  {"text": "Between lines", "time": 17.5}]}))
    grounded = ground_notes(notes, SEGMENTS, {})
    assert [d["time"] for d in grounded["decisions"]] == [20.5, 6.4, 14.3]


def test_words_after_a_clip_without_any_start_where_they_were_said():
    """A turn's clips are joined a minute at most: a clip without words that began a segment gave the words after it
    its start, 25 s before they were said."""
    reqs = [req(0, 30, "S1"), req(30, 55, "S1"), req(55, 80, "S1"), req(80, 100, "S1")]
    segs = segments_from_answers(reqs, ["One.", "Two.", "", "Three."])
    assert [(s.start, s.end, s.text) for s in segs] == [(0, 55, "One. Two."), (80, 100, "Three.")]
