"""g4media: local meeting and media transcription and notes with Gemma 4."""

import logging

__version__ = "0.1.0"

logger = logging.getLogger("mediapipe_g4")
logger.addHandler(logging.NullHandler())
