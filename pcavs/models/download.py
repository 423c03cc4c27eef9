"""Install, find-or-install and check the weights of any model in the registry (registry.py), atomically.

`install` has one path for every model. The download (an http(s) address, Google Drive through
`gdown`, or a file the user downloaded by hand) lands in a temporary folder beside the
destination; its bytes pass through one loop (`_pour`) that counts and hashes them, so a file
whose SHA-256 and size are published is refused as soon as it cannot be that file. PC-AVS's
demo.zip has no published hash: only the `latest_net_*.pth` files inference needs are unpacked
(through the same loop, after refusing unsafe entries and implausible sizes), and the SHA-256 of
each is recorded beside them (weights.RECORD). Every file must then load strictly, and only then
is it renamed into place. Every failure, Ctrl-C included, removes the temporary files and leaves
the destination as it was.
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
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator

from ..core.errors import InputError, NetworkError, PcavsError, WeightsError, reason
from ..core.version import __version__
from .checkpoint import file_sha256
from .registry import DRIVE_LINK, MODELS, PCAVS, SYNCNET, Weights, find
from .weights import RECORD, check_record, write_record

MAX_DOWNLOAD_BYTES = 2 << 30  # a download without a published size (the released demo.zip is about 600 MB)
MAX_TOTAL_BYTES = 2 << 30  # everything unpacked from an archive
MAX_RATIO = 100  # uncompressed / compressed size of one unpacked entry (float tensors barely compress)
TIMEOUT_S = 60  # seconds without a byte before a download is given up
CHUNK = 1 << 20
_TEMP_PREFIX = ".pcavs-download-"
_WEIGHT_FILE = re.compile(r"latest_net_[A-Za-z0-9_]+\.pth")
_DRIVE_FILE = re.compile(r"/file/d/([A-Za-z0-9_-]+)")
_DISK_ERRNOS = {errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EPERM, getattr(errno, "EDQUOT", errno.ENOSPC)}
_BAD_ZIP = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError)


def install(
    name: str,
    dest: str | os.PathLike | None = None,
    url: str | None = None,
    from_file: str | os.PathLike | None = None,
    verify: bool = True,
    progress: bool = True,
) -> Path:
    """Install the weights of the model `name` (see registry.MODELS) at `dest` and return where they are.

    `dest`: PC-AVS's folder, or a single file's path or folder; default: the user cache, where
    `find` looks. Source: `from_file` (a copy the user has: demo.zip, or the file itself), else
    `url` (any http(s) address), else the official one. Weights already at `dest` are kept as they
    are, and nothing is fetched. A file that is not the published one (SHA-256 and size) is refused
    with both hashes named; `verify=False` installs such a local copy anyway, with a warning.
    WeightsError or NetworkError (one line) on any failure, and `dest` is then untouched.
    """
    weights = MODELS[name]
    if url is not None and from_file is not None:
        raise InputError(f"give either url= (--url) or from_file= ({weights.source_option}), not both")
    if url is not None:
        check_url(url, f"from_file= ({weights.source_option})")
    if not verify and from_file is None:
        raise InputError("verify=False (--no-verify) is only for a file you have (--from-file); "
                         "a download is always checked against the published SHA-256")
    shown = weights.target(dest)
    target = shown.resolve() if shown.is_symlink() and weights.archive else shown  # into the folder a link points at
    folder = target if weights.archive else target.parent
    if complete(folder, weights.files if weights.archive else [target.name]):
        return shown
    if weights.archive:
        _check_replaceable(target)
    source = _local(weights, from_file) if from_file is not None else None
    label = str(source) if source is not None else url or weights.url
    with _workspace(target) as work:
        fetched = _fetch(weights, url or weights.url, source, work / weights.download_name, progress, verify)
        if weights.archive:
            staged = work / "staged"
            unpacked = _unpack(fetched, staged, label, progress)
            fetched.unlink()  # free the space before the networks are loaded
            write_record(staged, {file: digest for file, (_, digest) in unpacked.items()})
            for file in sorted(unpacked, key=lambda file: unpacked[file][0]):  # smallest first: a bad file fails fast
                _verify(weights, staged / file, f"{label} ({file})")
        else:
            staged = fetched
            _verify(weights, staged, label)
        gc.collect()  # let go of memory-mapped checkpoints before moving them (Windows)
        _put_in_place(weights, staged, target, work)
    return shown


def ensure(name: str, given: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """`find`; when nothing is given, set in the environment or installed anywhere, install into the user cache first."""
    weights = MODELS[name]
    try:
        return find(name, given)
    except WeightsError:
        if given is not None or os.environ.get(weights.env):
            raise
    print(f"pcavs: no {weights.title} weights yet; downloading {weights.download_name} ({weights.size_text}) "
          f"into {weights.target(None)}")
    try:
        return install(name, progress=progress)
    except NetworkError as exc:
        looked = ", ".join(map(str, weights.places()))
        raise NetworkError(f"no {weights.title} weights found (looked in {looked}) and {exc}") from None


def check(name: str, given: str | os.PathLike | None = None) -> str:
    """`pcavs download <name> --check`: the weights pcavs would load (see `find`) are the files published (or,
    for PC-AVS, those recorded in SHA256SUMS at install time) and load strictly; one line saying so."""
    weights = MODELS[name]
    found = find(name, given)
    if weights.published is not None:
        size, digest = found.stat().st_size, file_sha256(found)
        if weights.published.differs(digest, size):
            raise weights.published.mismatch(str(found), digest, size, f"delete it and run `{weights.command}` again")
        weights.verify(found, str(found))
        return f"{found}: the published {weights.published.name} (SHA-256 {digest}, {size:,} bytes); loads strictly"
    if not found.is_dir():
        raise WeightsError(f"{found}: not a checkpoint folder; `{weights.command} --check` checks a folder of weights")
    recorded = check_record(found)
    for file in weights.files:
        weights.verify(found / file, str(found / file))
    gc.collect()
    if recorded is None:
        return (f"{found}: the {len(weights.files)} files load strictly; it has no {RECORD} (placed there by hand?), so "
                f"they could not be checked against their install-time SHA-256 (`{weights.command}` records it)")
    return f"{found}: every file has the SHA-256 recorded in {RECORD} at install time, and loads strictly"


def complete(folder: str | os.PathLike, files: Iterable[str]) -> bool:
    """True when `folder` holds every one of `files`, none visibly truncated (cheap: no hashing)."""
    return all(_looks_whole(Path(folder) / file) for file in files)


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
    """Install PC-AVS's latest_net_{G,V,E,A_sync}.pth into `dest` (default: $PCAVS_HOME/demo) from `zip_path` (a
    demo.zip on disk), `url` or Google Drive; see `install`."""
    return install(PCAVS.name, dest, url, zip_path, progress=progress)


def ensure_weights(checkpoints: str | os.PathLike | None = None) -> Path:
    """Where PC-AVS's weights are (see `find`); with none anywhere, download them into the user cache."""
    return ensure(PCAVS.name, checkpoints)


def download_syncnet(
    dest: str | os.PathLike | None = None,
    url: str | None = None,
    from_file: str | os.PathLike | None = None,
    progress: bool = True,
    verify: bool = True,
) -> Path:
    """Install syncnet_v2.model (default: into the user cache, where `pcavs eval` looks); see `install`."""
    return install(SYNCNET.name, dest, url, from_file, verify, progress)


# ---------------------------------------------------------------------------- the one loop


class _Count:
    """The SHA-256 and length of the bytes that pass; `too_long(size)` is raised once they pass `limit`."""

    def __init__(self, limit: int | None = None, too_long: Callable[[int], PcavsError] | None = None):
        self.hash = hashlib.sha256()
        self.size = 0
        self.limit = limit
        self.too_long = too_long

    def add(self, block: bytes) -> None:
        self.hash.update(block)
        self.size += len(block)
        if self.limit is not None and self.size > self.limit:
            raise self.too_long(self.size)


def _pour(read: Callable[[int], bytes], target: Path, count: _Count, bar, unreadable: Callable[[Exception], PcavsError],
          errors: tuple[type[BaseException], ...], place: Path) -> None:
    """Copy `read`'s blocks into the new file `target` until it returns b"", counting them and moving the progress
    `bar` (if any); errors name `place`."""
    try:
        out = open(target, "wb")
    except OSError as exc:
        raise _cannot_write(place, exc) from None
    with out:
        while True:
            try:
                block = read(CHUNK)
            except errors as exc:
                raise unreadable(exc) from None
            if not block:
                return
            count.add(block)
            try:
                out.write(block)
            except OSError as exc:
                raise _cannot_write(place, exc) from None
            if bar is not None:
                bar.update(len(block))


def _cannot_write(place: Path, exc: OSError) -> WeightsError:
    return WeightsError(f"{place}: cannot store the download ({reason(exc)}); free some space or choose another destination")


# ---------------------------------------------------------------------------- fetching


def _local(weights: Weights, from_file: str | os.PathLike) -> Path:
    path = Path(from_file).expanduser()
    if not path.is_file():
        what = f"is a folder, not {weights.download_name}" if path.is_dir() else "no such file"
        raise WeightsError(f"{path}: {what}; download {weights.url} and give the path of {weights.download_name}")
    return path


def _fetch(weights: Weights, url: str, source: Path | None, target: Path, progress: bool, verify: bool) -> Path:
    """Copy `source`, else download `url`, to `target`; a published file that differs is refused once its bytes are
    counted (a download: as soon as it is longer), or, a local copy with `verify=False`, installed with a warning."""
    from tqdm.auto import tqdm

    if source is not None:
        todo = (f"check that it is the released file, or install it anyway with "
                f"`{weights.command} {weights.source_option} {source} --no-verify`")
        count = _Count()
        try:
            src = open(source, "rb")
        except OSError as exc:
            raise WeightsError(f"{source}: cannot be read ({reason(exc)})") from None
        with src:  # a local copy: quick, no progress bar
            _pour(src.read, target, count, None, lambda exc: WeightsError(f"{source}: cannot be read ({reason(exc)})"),
                  (OSError,), target.parent.parent)
    elif (urllib.parse.urlsplit(url).hostname or "").lower() in ("drive.google.com", "docs.google.com"):
        todo = f"check the address, or {weights.by_hand}"
        _gdown(weights, url, target, progress)
        count = None  # gdown counts nothing for us
    else:
        todo = f"check the address, or {weights.by_hand}"
        count = _http_get(weights, url, target, progress, todo)
    published = weights.published
    if published is None:
        return target
    digest, size = (count.hash.hexdigest(), count.size) if count else (file_sha256(target), target.stat().st_size)
    if not published.differs(digest, size):
        return target
    if source is None or verify:
        raise published.mismatch(str(source or url), digest, size, todo)
    warnings.warn(f"{source} is not the published {published.name} (SHA-256 {digest}, {size:,} bytes; expected "
                  f"{published.sha256}, {published.size:,} bytes); installing it anyway (--no-verify)", stacklevel=4)
    return target


def _failed(weights: Weights, source: str, why: str) -> NetworkError:
    return NetworkError(f"downloading the weights from {source} failed ({why}); check the connection, or {weights.by_hand}")


def _http_get(weights: Weights, url: str, target: Path, progress: bool, todo: str) -> _Count:
    """Stream `url` into `target`; NetworkError (one line) on any failure. A published file is refused from the
    length the server announces, or as soon as more bytes arrive than it has."""
    from tqdm.auto import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": f"pcavs/{__version__}"})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        raise _failed(weights, url, f"HTTP {exc.code} {reason(exc)}") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise _failed(weights, url, reason(exc)) from None
    published, name = weights.published, weights.download_name
    if published is not None:
        count = _Count(published.size, lambda size: WeightsError(
            f"{url}: not the published {name}: longer than its {published.size:,} bytes "
            f"(SHA-256 {published.sha256}); {todo}"))
    else:
        count = _Count(MAX_DOWNLOAD_BYTES, lambda size: _failed(
            weights, url, f"more than {MAX_DOWNLOAD_BYTES >> 20} MiB, far more than {name}"))
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if total is not None and published is not None and total != published.size:
            raise WeightsError(f"{url}: not the published {name}: the server offers {total:,} bytes, expected "
                               f"{published.size:,} (SHA-256 {published.sha256}); {todo}")
        if total is not None and total > MAX_DOWNLOAD_BYTES:
            raise _failed(weights, url, f"the server offers {total >> 20} MiB, far more than {name}")
        with tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=not progress) as bar:
            _pour(response.read, target, count, bar,
                  lambda exc: _failed(weights, url, f"after {count.size} bytes: {reason(exc)}"),
                  (OSError, http.client.HTTPException), target.parent.parent)
    if total is not None and count.size != total:
        raise _failed(weights, url, f"the connection closed after {count.size} of {total} bytes")
    return count


def _gdown(weights: Weights, url: str, target: Path, progress: bool) -> None:
    """Fetch a Google Drive file with gdown (by its id when the link names one); it checks no hash of its own."""
    import gdown

    accepted = inspect.signature(gdown.download).parameters
    kwargs = {"output": str(target), "quiet": not progress}
    drive_id = _DRIVE_FILE.search(url)
    if drive_id:
        kwargs["id"] = drive_id[1]
    else:
        kwargs["url"] = url
        if "fuzzy" in accepted:
            kwargs["fuzzy"] = True  # an open?id= or uc?id= link
    if "timeout" in accepted:
        kwargs["timeout"] = TIMEOUT_S
    try:
        result = gdown.download(**kwargs)
    except OSError as exc:  # requests' network errors are OSErrors too, but without an errno
        if exc.errno in _DISK_ERRNOS:
            raise _cannot_write(target.parent.parent, exc) from None
        raise _failed(weights, url, reason(exc)) from None
    except Exception as exc:  # gdown and requests raise their own types (quota page, permission, HTTP status)
        raise _failed(weights, url, f"{type(exc).__name__}: {reason(exc)}") from None
    if result is None or not target.is_file():
        raise _failed(weights, url, "Google Drive sent no file")
    if weights.archive and not zipfile.is_zipfile(target):
        raise _failed(weights, url, f"Google Drive sent a web page instead of {weights.archive}, often its download "
                                    "quota; try again later")


# ---------------------------------------------------------------------------- unpacking and checking


def _unpack(archive: Path, staged: Path, label: str, progress: bool) -> dict[str, tuple[int, str]]:
    """Unpack the files PC-AVS needs into the new folder `staged`; their sizes and SHA-256."""
    from tqdm.auto import tqdm

    try:
        zf = zipfile.ZipFile(archive)
    except (OSError, *_BAD_ZIP) as exc:
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
                count = _Count(info.file_size, lambda size, info=info: WeightsError(
                    f"{label}: {info.filename} unpacks to more than its recorded size; refusing it"))
                try:
                    entry = zf.open(info)
                except (OSError, *_BAD_ZIP) as exc:
                    raise WeightsError(f"{label}: {info.filename} cannot be read ({reason(exc)}); download it again") from None
                with entry:
                    _pour(entry.read, staged / name, count, bar, lambda exc, info=info: WeightsError(
                        f"{label}: {info.filename} is damaged ({reason(exc)}); download it again"),
                        (OSError, *_BAD_ZIP), staged.parent.parent)
                if count.size != info.file_size:
                    raise WeightsError(f"{label}: {info.filename} is shorter than recorded; download it again")
                unpacked[name] = (count.size, count.hash.hexdigest())
    return unpacked


def _choose(zf: zipfile.ZipFile, label: str) -> dict[str, zipfile.ZipInfo]:
    """The entries to unpack: one of each needed file, all in one folder (the zip root or e.g. demo/)."""
    wanted = set(PCAVS.files)
    found: dict[str, list[zipfile.ZipInfo]] = {name: [] for name in wanted}
    for info in zf.infolist():
        name = info.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        if name.startswith("/") or re.match(r"[A-Za-z]:", name) or ".." in parts:
            raise WeightsError(f"{label}: refusing the zip: it holds the unsafe path {info.filename!r}")
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise WeightsError(f"{label}: refusing the zip: it holds the link {info.filename!r}")
        if info.is_dir() or not parts or parts[-1] not in wanted or parts[0] == "__MACOSX":
            continue  # other files, such as latest_net_D.pth, are not needed for inference
        found[parts[-1]].append(info)
    for name in sorted(wanted):
        if not found[name]:
            raise WeightsError(f"{label}: {name} is not in the zip; is this PC-AVS's demo.zip? ({PCAVS.by_hand})")
        if len(found[name]) > 1:
            where = ", ".join(i.filename for i in found[name][:2])
            raise WeightsError(f"{label}: holds {name} more than once ({where}); cannot tell which to install")
    chosen = {name: entries[0] for name, entries in found.items()}
    folders = sorted({str(PurePosixPath(i.filename.replace("\\", "/")).parent) for i in chosen.values()})
    if len(folders) > 1:
        raise WeightsError(f"{label}: the weights sit in different folders of the zip ({', '.join(folders)}); expected them together")
    for info in chosen.values():
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


def _verify(weights: Weights, path: Path, label: str) -> None:
    """The model's strict load; any other failure (e.g. a tensor of the right shape but an unusable dtype) as a WeightsError."""
    try:
        weights.verify(path, label)
    except WeightsError:
        raise
    except Exception as exc:
        raise WeightsError(f"{label}: cannot be loaded ({type(exc).__name__}: {reason(exc)}); download it again") from None


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


def _put_in_place(weights: Weights, staged: Path, target: Path, work: Path) -> None:
    """Rename the checked file or folder into place; an earlier incomplete folder is swapped out, never merged."""
    if weights.archive is None or not target.exists():
        try:
            os.replace(staged, target)
        except OSError as exc:
            if not complete(target if weights.archive else target.parent, weights.files if weights.archive else [target.name]):
                raise WeightsError(f"{target}: cannot move the weights into place ({reason(exc)})") from None
        return
    if complete(target, weights.files):  # another process finished first
        return
    _check_replaceable(target)
    previous = work / "previous"
    os.replace(target, previous)  # removed with the temporary folder
    try:
        os.replace(staged, target)
    except BaseException:
        os.replace(previous, target)
        raise
