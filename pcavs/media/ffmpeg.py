"""The ffmpeg binary, and the one way pcavs runs it.

pcavs uses the ffmpeg that the `imageio-ffmpeg` wheel ships (a static build with libx264,
AAC, MP3, Opus, Vorbis and FLAC), so nothing has to be installed with apt; `IMAGEIO_FFMPEG_EXE`
points pcavs (and imageio) at another binary. Every ffmpeg gets an argument list (never a shell
string) and its inputs by `file:` URL, runs in its own session (so Ctrl-C reaches Python, which
cleans up, and not ffmpeg) unless pcavs leads a session itself (a batch worker: there ffmpeg
stays in the worker's process group, so that stopping the worker stops its ffmpegs too), and
keeps its stderr for the one-line reason of a failure.

Timeouts:
- a pipe (`Ffmpeg`: decoding frames or audio as they are read, encoding frames as they are
  written) has none: it lasts as long as its reader or writer, which kills it when it stops;
- a one-shot command (`run`) has one: `QUICK` (120 s) for what reads only a file's header
  (probing, the version), `WHOLE` (1 h) for what reads a whole file (all its frames or audio).
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..core.errors import InputError, one_line

QUICK = 120  # seconds: `ffmpeg -i` on a local file takes well under one
WHOLE = 3600  # seconds: an hour of video decoded on a slow machine


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary: imageio-ffmpeg's (or $IMAGEIO_FFMPEG_EXE), else `ffmpeg` on PATH."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        found = shutil.which("ffmpeg")
        if found is None:
            raise InputError("ffmpeg not found: pip install imageio-ffmpeg (its wheel ships the binary)") from None
        return found


def own_session() -> bool:
    """Whether a new ffmpeg gets a session of its own: yes, unless this process leads its own session already."""
    return not hasattr(os, "getsid") or os.getsid(0) != os.getpid()


def file_url(path: str | Path) -> str:
    """`path` as ffmpeg's `file:` URL, so a name such as `concat:x` or `http:y` is never taken for a protocol."""
    return "file:" + str(Path(path).absolute())


def last_line(report: str) -> str:
    """The last non-empty line of ffmpeg's stderr (where it says why it stopped), shortened."""
    lines = [line.strip() for line in report.strip().splitlines() if line.strip()]
    if not lines:
        return "ffmpeg gave no reason"
    return one_line(re.sub(r"^\[[^\]]* @ 0x[0-9a-f]+\] ", "", lines[-1]))  # drop "[out#0/mp4 @ 0x5561...] "


class Ffmpeg:
    """One ffmpeg process on pipes, with its stderr in a temporary file; `close()` kills it if it still runs."""

    def __init__(self, args: list[str], stdin=None, stdout=None):
        self.errors = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(
                [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", *args], stdin=stdin if stdin is not None else subprocess.DEVNULL, stdout=stdout,
                stderr=self.errors, start_new_session=own_session(),
            )
        except OSError:
            self.errors.close()
            raise

    def wait(self) -> int:
        return self.proc.wait()

    def finish(self) -> tuple[int, str]:
        """Wait for ffmpeg: (exit status, its last error line)."""
        return self.proc.wait(), self.reason()

    def reason(self) -> str:
        """ffmpeg's last error line."""
        self.errors.seek(0)
        return last_line(self.errors.read().decode(errors="replace"))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:  # a broken pipe's buffered bytes cannot be flushed any more
                    pass
        self.proc.wait()
        self.errors.close()


def run(args: list[str], timeout: float, loglevel: str = "error") -> subprocess.CompletedProcess:
    """Run ffmpeg `args` to the end (stdout and stderr captured); subprocess.TimeoutExpired after `timeout` s."""
    return subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", loglevel, *args], stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                          start_new_session=own_session())


@functools.lru_cache(maxsize=1)
def has_soxr() -> bool:
    """Whether this ffmpeg resamples with libsoxr (the high-quality resampler librosa uses too)."""
    try:
        report = subprocess.run([ffmpeg_exe(), "-hide_banner", "-version"], capture_output=True, text=True, timeout=QUICK)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--enable-libsoxr" in report.stdout
