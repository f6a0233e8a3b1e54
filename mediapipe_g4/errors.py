"""Domain errors. The library raises these; only the CLI turns them into `Error: ...` lines."""


class G4Error(Exception):
    """An error a user can act on: the message says what is wrong and what to do."""


class MediaError(G4Error):
    """The recording cannot be read, or lacks what the command needs (e.g. an audio track)."""


class FFmpegNotFound(G4Error):
    """No FFmpeg binary: neither on PATH nor from the imageio-ffmpeg package."""


class ModelError(G4Error):
    """The model cannot be loaded or run."""


class PlanError(G4Error):
    """The requests cannot be planned within the model's limits."""


class OutputError(G4Error):
    """An output cannot be written."""


class EvalError(G4Error):
    """A reference or result for `g4media eval` cannot be read, or nothing pairs up."""


class ResultError(G4Error):
    """A result file (X.json) cannot be read, or is not one that g4media wrote."""
