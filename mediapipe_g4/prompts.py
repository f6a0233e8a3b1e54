"""The texts we send to Gemma 4, and where the audio and the image sit around them.

The ASR and speech-translation prompts are the model card's. Audio goes inside the user turn after a
brief instruction (audio before the text was reported to hurt the 12B's transcription) and early in
the prompt; a keyframe, if any, after the clip. The order is a setting (`layout`), not code.
"""

from __future__ import annotations

import re

from .engine import AudioPart, ImagePart, Part, TextPart
from .errors import PlanError
from .records import clock  # noqa: F401 - re-exported: prompts write times this way

# The model card's prompts. {language} is a language name ("English"); None means: let the model tell.
ASR_PROMPT = (
    "Transcribe the following speech segment in {language} into {language} text.\n\n"
    "Follow these specific instructions for formatting the answer:\n"
    "* Only output the transcription, with no newlines.\n"
    "* When transcribing numbers, write the digits, i.e. write 1.7 and not one point seven, "
    "and write 3 instead of three."
)
ASR_PROMPT_AUTO = (
    "Transcribe the following speech segment in its original language.\n\n"
    "Follow these specific instructions for formatting the answer:\n"
    "* Only output the transcription, with no newlines.\n"
    "* When transcribing numbers, write the digits, i.e. write 1.7 and not one point seven, "
    "and write 3 instead of three."
)
AST_PROMPT = (
    "Transcribe the following speech segment in {language}, then translate it into {target}.\n"
    "When formatting the answer, first output the transcription in {language}, then one newline, "
    "then output the string '{target}: ', then the translation in {target}."
)
KEYFRAME_HINT = "The image is what was on screen during the audio; use it only to spell names and terms."  # any layout

# Names and terms the user gives (`--vocabulary`), for their spelling: said after each instruction.
VOCABULARY_LINE = "Names and terms that may be said, spelled as they should be written: {terms}."
MAX_VOCABULARY_CHARS = 600  # the list comes before every clip, and audio is heard worse behind a long text


def parse_vocabulary(text: str | None) -> tuple[str, ...]:
    """`--vocabulary`: terms separated by commas or new lines, trimmed, each once (first spelling kept)."""
    terms: dict[str, str] = {}
    for item in (text or "").replace("\n", ",").split(","):
        term = " ".join(item.split())
        if term:
            terms.setdefault(term.casefold(), term)
    joined = ", ".join(terms.values())
    if len(joined) > MAX_VOCABULARY_CHARS:
        raise PlanError(f"--vocabulary is {len(joined)} characters; keep it to {MAX_VOCABULARY_CHARS} at most (the "
                        "model reads it before every clip): the names and terms it would otherwise get wrong")
    return tuple(terms.values())


def with_vocabulary(instruction: str, vocabulary: tuple[str, ...] = ()) -> str:
    """An instruction, with the vocabulary line after it when there is one."""
    return f"{instruction}\n{VOCABULARY_LINE.format(terms=', '.join(vocabulary))}" if vocabulary else instruction


# Where the parts of a transcription request go, first to last. "text" is the instruction.
DEFAULT_LAYOUT = ("text", "audio", "image")
LAYOUTS = {
    "text-audio-image": ("text", "audio", "image"),
    "text-image-audio": ("text", "image", "audio"),
    "audio-text-image": ("audio", "text", "image"),
}


def transcription_instruction(
    language: str | None = None, *, translate_to: str | None = None, with_image: bool = False,
    vocabulary: tuple[str, ...] = (),
) -> str:
    if translate_to:
        text = AST_PROMPT.format(language=language or "its original language", target=translate_to)
    elif language:
        text = ASR_PROMPT.format(language=language)
    else:
        text = ASR_PROMPT_AUTO
    text = with_vocabulary(text, vocabulary)
    return f"{text}\n{KEYFRAME_HINT}" if with_image else text


def transcription_parts(
    audio: AudioPart,
    image: ImagePart | None = None,
    *,
    language: str | None = None,
    translate_to: str | None = None,
    layout: tuple[str, ...] | str = DEFAULT_LAYOUT,
    vocabulary: tuple[str, ...] = (),
) -> tuple[Part, ...]:
    """The user turn of one transcription request, in the order `layout` names."""
    order = LAYOUTS[layout] if isinstance(layout, str) else tuple(layout)
    if sorted(order) != ["audio", "image", "text"]:
        raise ValueError(f"a layout orders 'text', 'audio' and 'image', got {order!r}")
    pieces: dict[str, Part | None] = {
        "text": TextPart(transcription_instruction(language, translate_to=translate_to, with_image=image is not None,
                                                   vocabulary=vocabulary)),
        "audio": audio,
        "image": image,
    }
    return tuple(p for name in order if (p := pieces[name]) is not None)


def split_translation(answer: str, target: str) -> tuple[str, str]:
    """(transcription, translation) from an answer to the translation prompt: split at the last marker that opens a
    line, `{target}:` ("English translation:" too) or "Translation:" ("Translation (English):"), in any case and in
    markdown's stars too ("**English:**"); else at the last `{target}:` anywhere; else at a "Translation:" after a
    sentence's end (one inside the speech, "we need a better translation: ...", is words); without any, an answer of
    two or more lines is the transcription and, on its last line, the translation."""
    name = re.escape(target)

    def marker(label: str) -> str:
        return rf"[*_#\t ]*\b{label}(?!\w)[*_\t ]*:[*_\s]*"

    asked = marker(rf"{name}(?: translation)?")  # "English:", as asked; "English translation:"
    into = rf"(?: \({name}\)| (?:in|into|to) {name})?"
    labelled = marker(rf"translation{into}")  # "Translation (English):"
    # the last marker that opens a line (the speech itself may say "English:"), else the last asked one anywhere,
    # else a "Translation:" after a sentence's end ("Hola. Translation: Hello.")
    after_sentence = marker(rf"Translation{into}")  # a capital T (matched with case): not a spoken word
    found = (list(re.finditer(rf"(?im)^(?:{asked}|{labelled})", answer)) or list(re.finditer(rf"(?i){asked}", answer))
             or list(re.finditer(rf"(?<=[.!?。？！]){after_sentence}", answer)))
    if found:
        return answer[:found[-1].start()].strip(), answer[found[-1].end():].strip()
    lines = [line.strip() for line in answer.strip().splitlines() if line.strip()]
    if len(lines) >= 2:
        return " ".join(lines[:-1]), lines[-1]
    return answer.strip(), ""


# --------------------------------------------------------------------------- notes

NOTES_SYSTEM = "You write accurate meeting notes from a meeting's transcript and the slides shown in it."

_NOTES_KEYS = (
    "Write the meeting notes as one JSON object with these keys:\n"
    '"summary" (a paragraph), "decisions" (list of strings), "action_items" (list of '
    '{"text", "owner", "due", "time"}), "chapters" (list of {"start", "title"}), "questions" (list of strings).\n'
)
NOTES_PROMPT = (
    "Below is a meeting as a timeline: transcript lines as `[mm:ss] Speaker: text` (`[h:mm:ss]` past the first "
    "hour) and, at their times, the slides or scenes that were on screen.\n"
    + _NOTES_KEYS
    + "Give each time as the timeline shows it (\"mm:ss\", or \"h:mm:ss\" past the first hour). Use only what the "
    "timeline says; owner and due are null when not said.\n"
    "Output only the JSON."
)
# The notes written from the summaries of a long meeting's parts: their times are in the summaries' text (the
# parts' headings are ranges, no time of anything said).
NOTES_FROM_SUMMARIES_PROMPT = (
    _NOTES_KEYS
    + "Give each time as the summaries write it (\"mm:ss\", or \"h:mm:ss\" past the first hour), never a part's "
    "heading. Use only what the summaries say; owner and due are null when not said.\n"
    "Output only the JSON."
)

SECTION_PROMPT = (
    "Below is one part ({start} to {end}) of a longer meeting as a timeline: transcript lines as "
    "`[mm:ss] Speaker: text` (`[h:mm:ss]` past the first hour) and the slides that were on screen.\n"
    "Summarize this part for someone who will write notes of the whole meeting: what was discussed, decisions, "
    "action items with owners, due dates and times, open questions, and topic changes with their times. "
    "Keep speakers, names, numbers and times exact. Plain text, at most {words} words."
)

# The notes' language (`--notes-language`; by default the transcript's), said after each notes instruction. The JSON's
# keys stay as NOTES_PROMPT names them: the notes are read by key.
NOTES_LANGUAGE_LINE = "Write in {language} (keep any JSON keys as named above)."


def language_line(language: str | None) -> str:
    """The line that names the notes' language, or "" when none was named."""
    return NOTES_LANGUAGE_LINE.format(language=language) if language else ""


def in_language(instruction: str, language: str | None) -> str:
    """A notes instruction, with the line that names the language to write in when there is one."""
    return f"{instruction}\n{language_line(language)}" if language else instruction


MERGE_PROMPT = (
    "Below are summaries of consecutive parts of one meeting, in order, each headed by its time range.\n"
    "{task}"
)
