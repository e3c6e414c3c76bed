"""The one error type replkit shows to people as a single line, never as a traceback."""

from __future__ import annotations

__all__ = ["ReplkitError"]


class ReplkitError(Exception):
    """A mistake a person can fix: the message says what is wrong and where, in one line.

    Command-line tools, the REPL and the IPython extension print these without a traceback.
    """
