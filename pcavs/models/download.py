"""Fetch, check and install released weights atomically: PC-AVS's `demo.zip` (spec §1) and the single
files of the other models (`fetch_file`: GFPGAN, SyncNet).

Sources: Google Drive through `gdown` (demo.zip's default), any http(s) address, or a file the
user downloaded by hand. Downloads land in a temporary folder beside the destination. A file
whose SHA-256 and size are published (`Published`) is hashed and counted while it streams and
refused when either differs; demo.zip has no published hash, so the SHA-256 of each file
unpacked from it is recorded beside the installed files instead (models/weights.py). Only the
`latest_net_*.pth` files inference needs are unpacked (after refusing unsafe entries and
implausible sizes), each is strictly loaded against its architecture, and only then is the
staged folder renamed into place. Every failure, Ctrl-C included, removes the temporary
files and leaves the destination as it was.
"""
from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import http.client
import inspect
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from ..core.errors import InputError, NetworkError, WeightsError, reason
from ..core.files import AtomicFile, cache_dir
from ..core.version import __version__
from .checkpoint import file_sha256
from .weights import (
    DEFAULT_SUBDIR, NETWORKS, RECORD, check_record, checkpoint_filename, find_checkpoints, load_checkpoint_file,
    write_record,
)

DRIVE_ID = "1Zehr3JLIpzdg2S5zZrhIbpYPKF-4gKU_"
DRIVE_LINK = f"https://drive.google.com/file/d/{DRIVE_ID}"
MAX_DOWNLOAD_BYTES = 2 << 30  # the zip itself (the released one is about 600 MB)
MAX_TOTAL_BYTES = 2 << 30  # everything unpacked from it
MAX_RATIO = 100  # uncompressed / compressed size of one unpacked entry (float tensors barely compress)
TIMEOUT_S = 60  # seconds without a byte before a download is given up
CHUNK = 1 << 20
BY_HAND = f"download {DRIVE_LINK} by hand and run `pcavs download --from-zip demo.zip`"
_WEIGHT_FILE = re.compile(r"latest_net_[A-Za-z0-9_]+\.pth")
_TEMP_PREFIX = ".pcavs-download-"
_DISK_ERRNOS = {errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EPERM, getattr(errno, "EDQUOT", errno.ENOSPC)}


@dataclass(frozen=True)
class Published:
    """What the publishers of a released file state about it: its name, SHA-256 (hex) and size in bytes."""

    name: str
    sha256: str
    size: int

    def differs(self, sha256: str, size: int) -> bool:
        return size != self.size or sha256 != self.sha256.lower()

    def mismatch(self, source: str, sha256: str, size: int, todo: str) -> WeightsError:
        """The error for a file from `source` that is not this one; it names both hashes and both sizes."""
        return WeightsError(f"{source}: not the published {self.name}: SHA-256 {sha256} ({size:,} bytes), expected "
                            f"{self.sha256} ({self.size:,} bytes); {todo}")


class _Counted:
    """The SHA-256 and byte count of a file's bytes as they pass, compared with `published` (when known).

    `stop_early`: refuse the file as soon as it is longer than the published one (a download stops there).
    """

    def __init__(self, published: Published | None, source: str, todo: str, stop_early: bool):
        self.hash = hashlib.sha256()
        self.size = 0
        self.published = published
        self.source = source
        self.todo = todo
        self.stop_early = stop_early

    def update(self, block: bytes) -> None:
        self.hash.update(block)
        self.size += len(block)
        if self.stop_early and self.published is not None and self.size > self.published.size:
            raise WeightsError(f"{self.source}: not the published {self.published.name}: longer than its "
                               f"{self.published.size:,} bytes (SHA-256 {self.published.sha256}); {self.todo}")

    def differs(self) -> bool:
        return self.published is not None and self.published.differs(self.hash.hexdigest(), self.size)

    def error(self) -> WeightsError:
        return self.published.mismatch(self.source, self.hash.hexdigest(), self.size, self.todo)

    def warning(self) -> str:
        return (f"{self.source} is not the published {self.published.name} (SHA-256 {self.hash.hexdigest()}, "
                f"{self.size:,} bytes; expected {self.published.sha256}, {self.published.size:,} bytes); "
                "installing it anyway (--no-verify)")


def check_url(url: str, local: str) -> None:
    """InputError unless `url` is an http:// or https:// address; `local` names the option for a file on disk."""
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
        raise InputError(f"url={url!r}: not an http:// or https:// address; for a file on disk use {local}")


def download_weights(
    dest: str | os.PathLike | None = None,
    url: str | None = None,
    zip_path: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """Install latest_net_{G,V,E,A_sync}.pth into `dest` (default: the user cache, $PCAVS_HOME/demo) and return `dest`.

    Source: `zip_path` (a demo.zip on disk), else `url` (any HTTP(S) address), else Google Drive.
    When the four files are already in `dest` nothing is read or fetched. Each installed file's
    SHA-256 is recorded in `dest`/SHA256SUMS and checked on every load. Raises WeightsError
    (one line) when the download, the archive or a checkpoint is bad; `dest` is then untouched.
    """
    if url is not None and zip_path is not None:
        raise InputError("give either url= (--url) or zip_path= (--from-zip), not both")
    if url is not None:
        check_url(url, "zip_path= (--from-zip)")
    shown = Path(dest).expanduser() if dest is not None else cache_dir() / DEFAULT_SUBDIR
    dest = shown.resolve() if shown.is_symlink() else shown  # install into the folder a link points at
    if weights_complete(dest):
        return shown
    _check_replaceable(dest)
    archive_path = _local_zip(zip_path) if zip_path is not None else None
    source = str(zip_path) if zip_path is not None else url or DRIVE_LINK
    with _workspace(dest) as work:
        if archive_path is None:
            archive_path = _fetch(url, work / "demo.zip", progress)
        staged = work / "staged"
        unpacked = _extract(archive_path, staged, source, progress)
        if archive_path.parent == work:
            archive_path.unlink()  # free the space before the networks are loaded
        for name in sorted(unpacked, key=lambda name: unpacked[name][0]):  # smallest first: a bad file fails fast
            _verify(name, staged / name, f"{source} ({name})")
        write_record(staged, {name: digest for name, (_, digest) in unpacked.items()})
        gc.collect()  # let go of memory-mapped checkpoints before moving them (Windows)
        _install(staged, dest, work)
    return shown


def weights_complete(folder: str | os.PathLike) -> bool:
    """True when `folder` holds the four checkpoint files, none of them visibly truncated (cheap: no hashing)."""
    folder = Path(folder)
    return all(_looks_whole(folder / checkpoint_filename(net)) for net in NETWORKS)


def ensure_weights(checkpoints: str | os.PathLike | None = None) -> Path:
    """Where the weights are (see `find_checkpoints`); with none anywhere, download them into the user cache."""
    try:
        return find_checkpoints(checkpoints)
    except WeightsError:
        if checkpoints is not None:
            raise
    print("pcavs: no weights yet; downloading the released checkpoint (about 600 MB) first")
    return download_weights()


def fetch_file(
    url: str,
    dest: str | os.PathLike,
    check: Callable[[Path], None],
    *,
    published: Published | None = None,
    from_file: str | os.PathLike | None = None,
    verify: bool = True,
    progress: bool = True,
    command: str = "pcavs download",
) -> Path:
    """Install one weights file at `dest`: downloaded from `url` (http or https) or copied from `from_file`,
    checked, then renamed into place.

    With `published`, the file's SHA-256 and size are computed as its bytes arrive and a file that
    differs is refused (a WeightsError naming both hashes). Only a local copy may differ, and only
    with `verify=False`, which installs it with a warning. Then `check(path)` must pass (a strict
    load: WeightsError for a wrong file). An existing `dest` is kept as it is. Nothing is left
    behind when anything fails.
    """
    dest = Path(dest).expanduser()
    source = Path(from_file).expanduser() if from_file is not None else None
    if source is None:
        check_url(url, "--from-file")
        if not verify:
            raise InputError("verify=False (--no-verify) is only for a file you have (--from-file); "
                             "a download is always checked against the published SHA-256")
    if dest.is_file():
        return dest
    name = dest.name
    by_hand = f"download {url} by hand and run `{command} --from-file {name}`"
    if source is not None and not source.is_file():
        raise WeightsError(f"{source}: no such file; give the path of {name}")
    with _workspace(dest) as work:
        temp = work / name
        if source is None:
            counted = _Counted(published, url, f"check the address, or {by_hand}", stop_early=True)
            _http_get(url, temp, progress, name, by_hand, counted)
        else:
            todo = f"check that it is the released file, or install it anyway with `{command} --from-file {source} --no-verify`"
            counted = _Counted(published, str(source), todo, stop_early=False)
            _copy(source, temp, counted)
        if counted.differs():
            if verify:
                raise counted.error()
            warnings.warn(counted.warning(), stacklevel=2)
        check(temp)
        os.replace(temp, dest)
    return dest


def check_file(path: Path, published: Published, check: Callable[[Path], None], command: str) -> str:
    """`pcavs download --check` for a single-file model: the installed `path` is the published file (SHA-256 and
    size, else a WeightsError naming both hashes) and loads strictly (`check`); one line saying so."""
    if not path.is_file():
        raise WeightsError(f"{path}: file not found; run `{command}`")
    size = path.stat().st_size
    digest = file_sha256(path)
    if published.differs(digest, size):
        raise published.mismatch(str(path), digest, size, f"delete it and run `{command}` again")
    check(path)
    return f"{path}: the published {published.name} (SHA-256 {digest}, {size:,} bytes); loads strictly"


def check_weights(checkpoints: str | os.PathLike | None = None) -> str:
    """`pcavs download --check` for PC-AVS: the folder pcavs would load (see `find_checkpoints`) still holds what
    was installed (the SHA-256 of each file against its SHA256SUMS record) and every file loads strictly."""
    folder = find_checkpoints(checkpoints)
    if not folder.is_dir():
        raise WeightsError(f"{folder}: not a checkpoint folder; `pcavs download --check` checks a folder of weights")
    recorded = check_record(folder)
    for net in NETWORKS:
        path = folder / checkpoint_filename(net)
        load_checkpoint_file(net, path)
    gc.collect()
    if recorded is None:
        return (f"{folder}: the four files load strictly; it has no {RECORD} (placed there by hand?), so they could not "
                "be checked against their install-time SHA-256 (`pcavs download` records it)")
    return f"{folder}: every file has the SHA-256 recorded in {RECORD} at install time, and loads strictly"


# ---------------------------------------------------------------------------- destination


@contextlib.contextmanager
def _workspace(dest: Path) -> Iterator[Path]:
    """A temporary folder beside `dest` (same filesystem: renames are atomic), removed afterwards; when
    anything fails, the parent folders this call created are removed again (only while empty)."""
    created = _make_folder(dest.parent)
    try:
        try:
            workspace = tempfile.TemporaryDirectory(prefix=_TEMP_PREFIX, dir=dest.parent, ignore_cleanup_errors=True)
        except OSError as exc:
            raise WeightsError(f"{dest.parent}: cannot write there ({reason(exc)}); choose another destination") from None
        with workspace as tmp:
            yield Path(tmp)
    except BaseException:
        for folder in created:
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def _looks_whole(path: Path) -> bool:
    """A non-empty file; when it is a zip (torch.save's format) its central directory must be readable."""
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return False
        with open(path, "rb") as handle:
            if handle.read(2) != b"PK":
                return True  # the legacy pickle format has no directory to check
        with zipfile.ZipFile(path):
            return True
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def _check_replaceable(dest: Path) -> None:
    """`dest` may be absent, empty, or hold only checkpoint files and their record (an earlier, incomplete install)."""
    if not dest.exists():
        return
    if not dest.is_dir():
        raise WeightsError(f"{dest}: exists and is not a folder; choose another destination")
    try:
        others = sorted(p.name for p in dest.iterdir() if not ((_WEIGHT_FILE.fullmatch(p.name) or p.name == RECORD) and p.is_file()))
    except OSError as exc:
        raise WeightsError(f"{dest}: cannot read the folder ({reason(exc)})") from None
    if others:
        raise WeightsError(
            f"{dest}: holds files other than the weights ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}); "
            "give an empty or new folder as the destination"
        )


def _make_folder(folder: Path) -> list[Path]:
    """mkdir -p; returns the folders it created, deepest first."""
    created = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        created.append(probe)
        probe = probe.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"{folder}: cannot create the folder ({reason(exc)}); choose another destination") from None
    return created


def _install(staged: Path, dest: Path, work: Path) -> None:
    """Rename the verified folder into place; an earlier incomplete `dest` is swapped out, never merged."""
    if weights_complete(dest):  # another process finished first
        return
    _check_replaceable(dest)
    if not dest.exists():
        try:
            os.replace(staged, dest)
        except OSError as exc:
            if weights_complete(dest):
                return
            raise WeightsError(f"{dest}: cannot move the weights into place ({reason(exc)})") from None
        return
    previous = work / "previous"
    os.replace(dest, previous)  # removed with the temporary folder
    try:
        os.replace(staged, dest)
    except BaseException:
        os.replace(previous, dest)
        raise


# ---------------------------------------------------------------------------- fetching


def _local_zip(zip_path: str | os.PathLike) -> Path:
    path = Path(zip_path).expanduser()
    if not path.is_file():
        what = "is a folder, not demo.zip" if path.is_dir() else "no such file"
        raise WeightsError(f"{path}: {what}; download {DRIVE_LINK} and give the path of the zip")
    return path


def _failed(source: str, reason: str, by_hand: str = BY_HAND) -> NetworkError:
    return NetworkError(f"downloading the weights from {source} failed ({reason}); check the connection, or {by_hand}")


def _fetch(url: str | None, target: Path, progress: bool) -> Path:
    host = (urllib.parse.urlsplit(url).hostname or "").lower() if url else ""
    if url is None or host in ("drive.google.com", "docs.google.com"):
        _gdown(url, target, progress)
    else:
        _http_get(url, target, progress)
    return target


def _gdown(url: str | None, target: Path, progress: bool) -> None:
    import gdown

    source = url or DRIVE_LINK
    accepted = inspect.signature(gdown.download).parameters
    kwargs = {"output": str(target), "quiet": not progress}
    kwargs.update({"url": url} if url else {"id": DRIVE_ID})
    if "timeout" in accepted:
        kwargs["timeout"] = TIMEOUT_S
    if url and "fuzzy" in accepted:
        kwargs["fuzzy"] = True  # a /file/d/<id>/view link
    try:
        result = gdown.download(**kwargs)
    except OSError as exc:  # requests' network errors are OSErrors too, but without an errno
        if exc.errno in _DISK_ERRNOS:
            raise _cannot_write(target, exc) from None
        raise _failed(source, reason(exc)) from None
    except Exception as exc:  # gdown and requests raise their own types (quota page, permission, HTTP status)
        raise _failed(source, f"{type(exc).__name__}: {reason(exc)}") from None
    if result is None or not target.is_file():
        raise _failed(source, "Google Drive sent no file")
    if not zipfile.is_zipfile(target):
        raise _failed(source, "Google Drive sent a web page instead of demo.zip, often its download quota; try again later")


def _copy(source: Path, target: Path, counted: _Counted) -> None:
    """Copy a local file, counting its bytes."""
    try:
        src = open(source, "rb")
    except OSError as exc:
        raise WeightsError(f"{source}: cannot be read ({reason(exc)})") from None
    with src:
        try:
            out = open(target, "wb")
        except OSError as exc:
            raise _cannot_write(target, exc) from None
        with out:
            while True:
                try:
                    block = src.read(CHUNK)
                except OSError as exc:
                    raise WeightsError(f"{source}: cannot be read ({reason(exc)})") from None
                if not block:
                    break
                counted.update(block)
                try:
                    out.write(block)
                except OSError as exc:
                    raise _cannot_write(target, exc) from None


def _http_get(url: str, target: Path, progress: bool, name: str = "demo.zip", by_hand: str = BY_HAND,
              counted: _Counted | None = None) -> None:
    """Stream `url` into `target` with a progress bar; NetworkError (one line) on any failure. `counted` sees every
    byte as it arrives (and refuses a file that cannot be the published one before the rest is fetched)."""
    from tqdm.auto import tqdm


    request = urllib.request.Request(url, headers={"User-Agent": f"pcavs/{__version__}"})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        raise _failed(url, f"HTTP {exc.code} {reason(exc)}", by_hand) from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise _failed(url, reason(exc), by_hand) from None
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if total is not None and total > MAX_DOWNLOAD_BYTES:
            raise _failed(url, f"the server offers {total >> 20} MiB, far more than {name}", by_hand)
        expected = counted.published if counted is not None else None
        if total is not None and expected is not None and total != expected.size:
            raise WeightsError(f"{url}: not the published {expected.name}: the server offers {total:,} bytes, expected "
                               f"{expected.size:,} (SHA-256 {expected.sha256}); {counted.todo}")
        received = 0
        try:
            out = open(target, "wb")
        except OSError as exc:
            raise _cannot_write(target, exc) from None
        with out, tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=not progress) as bar:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise _failed(url, f"after {received} bytes: {reason(exc)}", by_hand) from None
                if not chunk:
                    break
                received += len(chunk)
                if received > MAX_DOWNLOAD_BYTES:
                    raise _failed(url, f"more than {MAX_DOWNLOAD_BYTES >> 20} MiB, far more than {name}", by_hand)
                if counted is not None:
                    counted.update(chunk)
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise _cannot_write(target, exc) from None
                bar.update(len(chunk))
    if total is not None and received != total:
        raise _failed(url, f"the connection closed after {received} of {total} bytes", by_hand)


def _cannot_write(target: Path, exc: OSError) -> WeightsError:
    return WeightsError(f"{target.parent.parent}: cannot store the download ({reason(exc)}); free some space or choose another destination")


# ---------------------------------------------------------------------------- unpacking


def _entry_problem(info: zipfile.ZipInfo) -> str | None:
    """Why an entry must not be in the zip at all, or None."""
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or re.match(r"[A-Za-z]:", name) or ".." in parts:
        return f"unsafe path {info.filename!r}"
    if (info.external_attr >> 16) & 0o170000 == 0o120000:
        return f"link {info.filename!r}"
    return None


def _choose(zf: zipfile.ZipFile, label: str) -> dict[str, zipfile.ZipInfo]:
    """The entries to unpack: one of each needed file, all in one folder (the zip root or e.g. demo/)."""
    wanted = {checkpoint_filename(net) for net in NETWORKS}
    found: dict[str, list[zipfile.ZipInfo]] = {name: [] for name in wanted}
    for info in zf.infolist():
        problem = _entry_problem(info)
        if problem:
            raise WeightsError(f"{label}: refusing the zip: it holds the {problem}")
        parts = PurePosixPath(info.filename.replace("\\", "/")).parts
        if info.is_dir() or not parts or parts[-1] not in wanted or parts[0] == "__MACOSX":
            continue  # other files, such as latest_net_D.pth, are not needed for inference
        found[parts[-1]].append(info)
    for name in sorted(wanted):
        if not found[name]:
            raise WeightsError(f"{label}: {name} is not in the zip; is this PC-AVS's demo.zip? ({BY_HAND})")
        if len(found[name]) > 1:
            where = ", ".join(i.filename for i in found[name][:2])
            raise WeightsError(f"{label}: holds {name} more than once ({where}); cannot tell which to install")
    chosen = {name: entries[0] for name, entries in found.items()}
    folders = sorted({str(PurePosixPath(i.filename.replace("\\", "/")).parent) for i in chosen.values()})
    if len(folders) > 1:
        raise WeightsError(f"{label}: the weights sit in different folders of the zip ({', '.join(folders)}); expected them together")
    for name, info in chosen.items():
        if info.flag_bits & 0x1:
            raise WeightsError(f"{label}: {info.filename} is encrypted; use the unencrypted demo.zip from {DRIVE_LINK}")
        if info.file_size > MAX_TOTAL_BYTES or (info.file_size > CHUNK and info.file_size > MAX_RATIO * max(info.compress_size, 1)):
            raise WeightsError(
                f"{label}: {info.filename} would unpack to {info.file_size >> 20} MiB from {info.compress_size >> 20} MiB; "
                "refusing what looks like a zip bomb, not the released demo.zip"
            )
    total = sum(info.file_size for info in chosen.values())
    if total > MAX_TOTAL_BYTES:
        raise WeightsError(f"{label}: the weights would unpack to {total >> 20} MiB (limit {MAX_TOTAL_BYTES >> 20} MiB); not the released demo.zip")
    return chosen


def _extract(archive: Path, staged: Path, label: str, progress: bool) -> dict[str, tuple[int, str]]:
    """Unpack the needed latest_net_*.pth into the new folder `staged`; returns their sizes and SHA-256."""
    from tqdm.auto import tqdm

    bad_zip = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError)
    try:
        zf = zipfile.ZipFile(archive)
    except (OSError, *bad_zip) as exc:
        raise WeightsError(f"{label}: truncated or not a zip file ({reason(exc)}); download it again") from None
    with zf:
        chosen = _choose(zf, label)
        total = sum(info.file_size for info in chosen.values())
        free = shutil.disk_usage(staged.parent).free
        if free < total:
            raise WeightsError(f"{staged.parent.parent}: needs {total >> 20} MiB free to unpack the weights, {free >> 20} MiB left")
        staged.mkdir()
        unpacked = {}
        with tqdm(total=total, unit="B", unit_scale=True, desc="unpacking", disable=not progress) as bar:
            for name, info in chosen.items():
                written = 0
                digest = hashlib.sha256()
                try:
                    source = zf.open(info)
                except (OSError, *bad_zip) as exc:
                    raise WeightsError(f"{label}: {info.filename} cannot be read ({reason(exc)}); download it again") from None
                with source, open(staged / name, "wb") as out:
                    while True:
                        try:
                            block = source.read(CHUNK)
                        except (OSError, *bad_zip) as exc:
                            raise WeightsError(f"{label}: {info.filename} is damaged ({reason(exc)}); download it again") from None
                        if not block:
                            break
                        written += len(block)
                        if written > info.file_size:
                            raise WeightsError(f"{label}: {info.filename} unpacks to more than its recorded size; refusing it")
                        try:
                            out.write(block)
                        except OSError as exc:
                            raise WeightsError(f"{staged.parent.parent}: cannot unpack the weights ({reason(exc)})") from None
                        digest.update(block)
                        bar.update(len(block))
                if written != info.file_size:
                    raise WeightsError(f"{label}: {info.filename} is shorter than recorded; download it again")
                unpacked[name] = (written, digest.hexdigest())
    return unpacked


def _verify(name: str, path: Path, label: str) -> None:
    """A strict load against the architecture (demo.zip has no published hash to check)."""
    net = name.removeprefix("latest_net_").removesuffix(".pth")
    try:
        load_checkpoint_file(net, path, label)
    except WeightsError:
        raise
    except Exception as exc:  # e.g. a tensor of the right shape but an unusable dtype
        raise WeightsError(f"{label}: cannot be loaded ({type(exc).__name__}: {reason(exc)}); download it again") from None
