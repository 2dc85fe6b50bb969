"""The one error type for user mistakes.

Anything a user can fix (a bad path, a malformed line, an unknown option) raises :class:`CsrlError`
with a message that says what is wrong, where, and what to do. The CLI prints the message and exits
with code 2, without a traceback. Bugs raise ordinary exceptions.
"""

from __future__ import annotations


class CsrlError(Exception):
    """A user mistake: bad input, bad configuration, missing files."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  hint: {hint}")


class NonFiniteError(CsrlError):
    """A NaN or Inf loss or gradient was detected during training."""

    exit_code = 3
