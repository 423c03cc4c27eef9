"""Error types, and the one-line wording of every message.

Every error pcavs raises on purpose is a `PcavsError` with a one-line message that names the
file or argument and what to do. Callers catch the kinds separately.
"""
from __future__ import annotations

import urllib.error


class PcavsError(Exception):
    """Base class for every error pcavs raises on purpose."""


class InputError(PcavsError):
    """A file or argument the user gave cannot be used (or the output cannot be written)."""


class WeightsError(PcavsError):
    """Checkpoint files are missing, truncated, unsafe, or belong to another model."""


class NetworkError(PcavsError):
    """Downloading weights failed: the connection, the server, or a quota; trying again may work."""


class OutOfMemoryError(PcavsError):
    """Even the smallest batch does not fit in the device's memory."""


def one_line(text: object, limit: int = 200) -> str:
    """`text` on one line (runs of whitespace, newlines included, become one space), cut to `limit` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def renamed(text: str, names: dict[str, str]) -> str:
    """`text` with each path in `names` replaced by its name (the user's own file name for a server's copy),
    the longest path first."""
    for path, name in sorted(names.items(), key=lambda item: -len(item[0])):
        text = text.replace(path, name)
    return text


def reason(exc: BaseException, limit: int = 160) -> str:
    """Why `exc` happened, in one short line: the system's words for an OS or network error, else its message,
    else the name of its type."""
    if isinstance(exc, urllib.error.HTTPError):
        text = str(exc.reason or "")
    elif isinstance(exc, urllib.error.URLError):
        inner = exc.reason
        text = (inner.strerror or str(inner)) if isinstance(inner, OSError) else str(inner)
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = str(exc)
    return one_line(text, limit) or type(exc).__name__
