"""The one exception type for bad user input (exit code 2 at the CLI), and the one way an
underlying error's message is put into it."""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class BadInput(Exception):
    """A problem with what the user gave us: recipe, data path, checkpoint, plan, model file.

    The message is one line that names the problem and, where possible, the fix.
    """


def one_line(error: BaseException, limit: int = 240, skip: tuple[str, ...] = ()) -> str:
    """``error``'s message as one line, to quote inside a ``BadInput`` or a report: colour codes
    removed, lines starting with a ``skip`` prefix left out (a library's boilerplate header),
    whitespace collapsed, cut to ``limit`` characters; the exception's type name when nothing is
    left."""
    lines = _ANSI.sub("", str(error)).splitlines()
    kept = [line for line in lines if not line.strip().startswith(skip)]
    return " ".join(" ".join(kept).split())[:limit] or type(error).__name__
