"""Files on disk: the user cache, whether a folder takes new files, and files that appear whole or not at all.

Every file pcavs writes for the user (videos, weights, tables, plots) is written under a hidden
temporary name beside its target (`.<name>.<run>-<random>.part`, on the same filesystem) and renamed
over the target only once it is complete; on any failure, Ctrl-C included, the temporary file
is removed and an existing target is left as it was. `<run>` is the run's id: each process has its
own, and a batch's workers take their batch's, so that cleaning up after a killed writer
(`remove_parts`) only ever touches this run's files, never those of another batch writing beside it.
"""
from __future__ import annotations

import glob
import os
import secrets
import tempfile
from pathlib import Path

from .errors import InputError, PcavsError

PART_SUFFIX = ".part"


def new_run() -> str:
    """A fresh run id (a batch's, which its workers join)."""
    return secrets.token_hex(4)


_run = new_run()  # this process's run id


def run_id() -> str:
    """The id that this process's temporary files carry."""
    return _run


def join_run(run: str) -> None:
    """Name this process's temporary files with `run` from now on (a batch worker takes its batch's id)."""
    global _run
    _run = run


if hasattr(os, "register_at_fork"):  # POSIX: a forked process is a run of its own
    os.register_at_fork(after_in_child=lambda: join_run(new_run()))


def cache_dir() -> Path:
    """The user cache: $PCAVS_HOME, default ~/.cache/pcavs."""
    return Path(os.environ.get("PCAVS_HOME", "~/.cache/pcavs")).expanduser()


def folder_writable(folder: str | os.PathLike) -> bool:
    """Whether a file can be created in `folder`, found by creating (and removing) one: the permission
    bits `os.access` reads say yes to root almost everywhere, also where creating a file fails."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".pcavs-", suffix=".probe"):
            return True
    except OSError:
        return False


class AtomicFile:
    """A hidden temporary file beside `target`, renamed over it by `commit()` and removed by `discard()`.

    As a context manager it claims the temporary name, gives its path, and commits when the block
    ends without an exception (discards otherwise).
    """

    def __init__(self, target: str | os.PathLike):
        self.target = Path(target)
        self.path = self.target.absolute().parent / f".{self.target.name}.{run_id()}-{secrets.token_hex(4)}{PART_SUFFIX}"

    def claim(self) -> Path:
        """Create the empty temporary file (so the folder is known to take new files); its path."""
        try:
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except OSError as exc:
            raise InputError(f"{self.path.parent}: cannot create files there ({exc.strerror}); "
                             "choose another output path") from None
        return self.path

    def commit(self) -> Path:
        """Rename the finished temporary file over the target; the target's path."""
        try:
            os.replace(self.path, self.target)
        except OSError as exc:
            self.discard()
            raise PcavsError(f"{self.target}: the finished file could not be moved into place ({exc.strerror})") from None
        return self.target

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Path:
        return self.claim()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def remove_parts(target: str | os.PathLike, run: str) -> None:
    """Delete the temporary files of `target` that killed writers of the run `run` left behind (no other run's)."""
    target = Path(target)
    name = f".{glob.escape(target.name)}.{glob.escape(run)}-*{PART_SUFFIX}"
    pattern = os.path.join(glob.escape(str(target.absolute().parent)), name)
    for part in glob.glob(pattern):
        try:
            os.unlink(part)
        except OSError:
            pass
