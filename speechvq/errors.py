"""User-facing errors.

Every problem a user can cause (a bad file, an unknown speaker, a wrong
argument) is raised as `SpeechVQError` with a one-line message; the CLI prints
that line and exits with status 2, without a traceback.
"""

from __future__ import annotations


class SpeechVQError(Exception):
    """A problem with the user's input, reported as one line."""
