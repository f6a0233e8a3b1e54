"""Model answers to transcription requests -> transcript segments.

Each clip's answer is cleaned (thinking blocks and special tokens are gone already; here: repetition
loops, junk without words, a clip that only names a sound, the translation prompt's two halves), and clips
that were cut from one speaker turn are joined back into segments of a minute at most, from the turn's start to
its end, with its speaker.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from .engine import EngineRequest
from .notes_schema import plain_text
from .prompts import split_translation
from .records import CLOCK_PATTERN, SPEAKER_LABEL, Segment

log = logging.getLogger("mediapipe_g4")

_JOIN_GAP = 0.3  # seconds: clips of one speaker this close were cut from one turn
# A turn's clips are joined into segments of at most this long: a lecture's 40-minute turn was one segment (one
# time to click in the report, one line the notes could not fit into a section of a small budget).
JOIN_LONGEST = 60.0


def joins(last: Segment, start: float, end: float, speaker: str) -> bool:
    """Whether a clip's speech (`start`-`end`, `speaker`'s) goes on the segment before it, `last`."""
    return (last.speaker == speaker and start - last.end <= _JOIN_GAP
            and max(last.end, end) - last.start <= JOIN_LONGEST)

# A phrase (1-100 chars) said four or more times in a row, or a longer one (20-300 chars) three times: a decoding loop,
# not speech. A last copy cut off by the answer's token budget ("Thank you. Thank") goes with it.
_SEP = r"[\s,.;:!?-]+"
_LOOPS = (re.compile(rf"(\S(?:.{{0,98}}?\S)?)(?:{_SEP}\1){{3,}}(?:({_SEP})(\S.{{0,300}}?)$)?", re.DOTALL),
          re.compile(rf"(\S.{{18,298}}?\S)(?:{_SEP}\1){{2,}}(?:({_SEP})(\S.{{0,300}}?)$)?", re.DOTALL))
_CHAR_LOOP = re.compile(r"(\S{1,8}?)\1{7,}")  # "hahahahahahahaha", CJK loops with no spaces
_HAS_WORD = re.compile(r"\w", re.UNICODE)


def _once(match: re.Match[str]) -> str:
    phrase, sep, tail = match.groups()
    if tail is None:
        return phrase
    if phrase.startswith(tail.rstrip(" ,.;:!?-")):
        return phrase + sep.strip()[:1]  # the loop, and the copy it was cut off in ("Thank you. Thank")
    return phrase + sep + tail


# A sound described instead of speech: "[music]", "(laughs)", "*applause*", "【音乐】" (a bracketed phrase of up to
# three words, one of them a sound's; "(Okay.)" is speech).
_BRACKETED = re.compile(r"\[([^\[\]()]{0,40})\]|\(([^()\[\]]{0,40})\)|（([^（）]{0,40})）|【([^【】]{0,40})】"
                        r"|\*([^*]{1,40})\*|<([^<>]{1,40})>")
_SOUND_WORD = re.compile(
    r"music\w*|songs?|singing|laugh\w*|chuckl\w*|giggl\w*|applause|clap\w*|cough\w*|sneez\w*|noises?|static|beep\w*|"
    r"ring\w*|silen\w*|inaudible|unintelligible|indistinct|unclear|crosstalk|chatter|blank_audio|sigh\w*|"
    r"breath\w*|typing|speaking|foreign|pauses?|audible|"
    r"音乐|音楽|笑|música|musique|musik|risas|rires|lachen|applaus|aplausos|applaudissements", re.IGNORECASE)


def _without_sound_tags(text: str) -> str:
    def drop(match: re.Match[str]) -> str:
        inner = next(g for g in match.groups() if g is not None)
        words = re.findall(r"\w+", inner)
        described = (len(words) <= 3 and any(_SOUND_WORD.fullmatch(w) for w in words)) or \
            " ".join(words).lower() in ("no speech", "no audio", "speaking in foreign language")
        return "" if described or not words else match.group(0)

    return _BRACKETED.sub(drop, text)


# What a model may put before the words it heard: a lead-in ("Transcription:", "Here is the transcription:"), a time
# ("[00:03]", "[00:03 - 00:05]"), a speaker label ("Speaker 1:", "S1:"). None of it was said.
_SECONDS = r"\d+(?:\.\d+)?s?"
_LEAD_IN = re.compile(
    r"^(?:(?:\w+[,.!]\s*)?here(?:'s| is) (?:the |your |a )?(?:\w+ )?transcri(?:pt|ption)\b[^:]{0,40}:\s*"
    r"|\**(?:transcription|transcript|transcribed text|the transcri(?:pt|ption) is)(?:\s*\([^()]{1,30}\))?\**\s*:"
    r"\s*\**\s*"
    r"|\**language\**\s*:\s*\**\w+\**\s+(?=\**transcri)"  # "Language: Spanish Transcription: ..."
    r"|transcribe the following speech segment\b[^.]{0,80}\.\s*"  # the prompt, echoed
    rf"|[\[(]{CLOCK_PATTERN}(?:\s*(?:-|–|-->)\s*{CLOCK_PATTERN})?[\])]\s*"
    rf"|\[{_SECONDS}\s*(?:-|–|-->)\s*{_SECONDS}\]\s*"  # "[0.00s - 2.50s]"
    rf"|(?:{SPEAKER_LABEL.pattern}|speaker_\d+)\s*:\s*)+", re.IGNORECASE)
# The language named on a line of its own before the words ("Language: Spanish\n\nHola a todos.")
_LANGUAGE_LINE = re.compile(r"^[*_]*language[*_]*[ \t]*:[ \t]*[*_]*\w+[*_]*[ \t]*\n", re.IGNORECASE)
# A speaker label opening a later line of the answer ("Hello.\nSpeaker 2: Hi."): one clip is one speaker's.
_LINE_LABEL = re.compile(rf"(?im)^[ \t]*(?:{SPEAKER_LABEL.pattern}|speaker_\d+)[ \t]*:[ \t]*")
# A translation no one asked for, on a line of its own after the words ("Hola.\n\nTranslation: Hello."); with
# --translate-to, the translation has been taken out already (`split_translation`).
_TRANSLATION_AFTER = re.compile(r"\n[ \t]*[*_]*(?:(?!(?:the|a|an|our|my|your|this|that|machine)\b)\w+ )?translation"
                                r"(?:\s*\([^()]{1,30}\))?[*_]*[ \t]*:(?:(?!```).)*", re.IGNORECASE | re.DOTALL)


# An answer that says there is no speech instead of transcribing it ("There is no speech in this audio.", "I'm sorry,
# but the audio does not contain any speech."): the whole answer, so speech that mentions speech stays.
_CLIP = r"(?:the|this) (?:provided |given )?(?:audio|clip|segment|recording)(?: clip| segment| file)?"
_SPEECH = r"(?:discernible |audible |clear |intelligible )?(?:speech|spoken words?)"
_ONLY_NOISE = r"(?:silence|(?:background )?noise|music)"
_NO_SPEECH = re.compile(
    r"\W*(?:(?:i'?m |i am )?sorry\b[^.]{0,40}?[,.]\s*(?:but\s+)?|unfortunately,?\s*)?"
    rf"(?:there(?:'s| is) no {_SPEECH}|no {_SPEECH}(?: (?:detected|found|present))?|"
    rf"{_CLIP} (?:is silent|(?:does not|doesn't) contain any {_SPEECH}|contains no {_SPEECH}|"
    rf"contains only {_ONLY_NOISE}|is too (?:unclear|quiet|noisy|short|faint) to transcribe)|"
    rf"i (?:can't|cannot|can not|am unable to|am not able to) transcribe {_CLIP}"
    rf"(?:,? (?:as|because|since) it (?:contains only {_ONLY_NOISE}|is [^.]{{0,40}}|contains no {_SPEECH}))?)"
    rf"(?:\s+(?:in|on|within) {_CLIP})?"
    rf"(?:[,;]?\s*(?:only|just) {_ONLY_NOISE})?\W*", re.IGNORECASE)


# A code fence around the whole answer, and a remark the model adds after the words
# ("(Note: some words were unclear.)"): none of it was said.
_FENCED = re.compile(r"```(?:(?:text|plaintext|txt|markdown|md)\b)?\s*(.*?)\s*```", re.IGNORECASE)
_REMARK = re.compile(r"\s*\((?:note|nb|n\.b\.)\s*:[^()]*\)\s*$", re.IGNORECASE)


def clean_transcript_text(text: str) -> str:
    """One clip's text: one line, loops collapsed to one occurrence, junk to ''."""
    text = _LANGUAGE_LINE.sub("", _TRANSLATION_AFTER.sub("", text.strip()))
    text = " ".join(_LINE_LABEL.sub("", text).split())
    for _ in range(2):  # a lead-in inside the fence, or a fence after the lead-in
        fenced = _FENCED.fullmatch(text)
        text = _LEAD_IN.sub("", fenced.group(1) if fenced else text, count=1)
    text = _REMARK.sub("", plain_text(text))  # and no **bold**: no one says it
    if not text or _NO_SPEECH.fullmatch(text):
        return ""
    for _ in range(3):  # a collapse can expose an outer loop
        collapsed = text
        for loop in _LOOPS:
            collapsed = loop.sub(_once, collapsed)
        collapsed = _CHAR_LOOP.sub(r"\1\1", collapsed)
        if collapsed == text:
            break
        text = collapsed
    if not _HAS_WORD.search(_without_sound_tags(text)):
        return ""  # no words, or only sounds described ("[music]" is no one's speech)
    return _unquoted(text.strip())


_QUOTE_PAIRS = {'"': '"', "'": "'", "“": "”", "‘": "’", "«": "»", "„": "“", "「": "」", "『": "』"}


def _unquoted(text: str) -> str:
    """The text without quotes the model put around all of it; a quote that is part of the speech ("'Tis",
    "he said 'yes'") stays."""
    if len(text) > 2 and _QUOTE_PAIRS.get(text[0]) == text[-1] and text[0] not in text[1:-1]:
        return text[1:-1].strip()
    if text[:1] in '"“' and text.count(text[0]) == 1:  # an opening quote whose end was cut off, or never came
        return text[1:].strip()
    if text[-1:] in '"”' and text.count(text[-1]) == 1 and "“" not in text:
        return text[:-1].strip()
    return text


def segments_from_answers(
    requests: Sequence[EngineRequest], answers: Sequence[str], *, translate_to: str | None = None
) -> list[Segment]:
    """Time-ordered segments; clips cut from one turn are joined (`joins`); empty clips are kept out."""
    pieces: list[tuple[EngineRequest, str]] = []
    untranslated = 0
    for req, answer in sorted(zip(requests, answers, strict=True), key=lambda p: (p[0].start, p[0].end)):
        text = answer
        if translate_to:
            source, translated = split_translation(answer, translate_to)
            untranslated += bool(source.strip()) and not translated
            text = translated or source
        pieces.append((req, clean_transcript_text(text)))
    if untranslated:
        log.warning("%d of %d clips came back without a translation into %s (an answer cut off, or the model did not "
                    "translate); their transcript stands in, in the language spoken", untranslated, len(pieces),
                    translate_to)
    segments: list[Segment] = []
    for req, text in pieces:
        speaker = req.speaker or "S1"
        start, end = req.speech or (req.start, req.end)  # the speech in the clip, not its padding
        if segments and not segments[-1].text:  # a segment of clips without words: no one's, and the words after
            segments.pop()                         # it start where they were said, not where it did
        last = segments[-1] if segments else None
        if last is not None and joins(last, start, end, speaker):
            joined = f"{last.text} {text}".strip() if text else last.text
            segments[-1] = Segment(last.start, max(last.end, end), speaker, joined)
        else:
            segments.append(Segment(start, end, speaker, text))
    return [s for s in segments if s.text]
