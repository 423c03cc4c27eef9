"""Fetch, check and install the released weights (`demo.zip`) atomically.

The zip is downloaded to a temporary file, extracted safely (no absolute paths, no `..`,
no links, size limits), every `latest_net_*.pth` that inference needs is strictly loaded
against the architecture, and only then is the folder renamed into place.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from .errors import WeightsError
from .weights import NETWORKS, checkpoint_filename, find_checkpoints, load_checkpoint_file

DRIVE_ID = "1Zehr3JLIpzdg2S5zZrhIbpYPKF-4gKU_"
DRIVE_LINK = f"https://drive.google.com/file/d/{DRIVE_ID}"
DEFAULT_DEST = Path("checkpoints") / "demo"
KNOWN_SHA256: dict[str, str] = {}  # file name -> SHA-256 of the released files, once recorded
MAX_TOTAL_BYTES = 2 << 30  # all extracted files together
MAX_RATIO = 200  # uncompressed / compressed size of one entry
TIMEOUT_S = 60


def download_weights(
    dest: str | os.PathLike | None = None,
    url: str | None = None,
    zip_path: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """Install latest_net_{G,V,E,A_sync}.pth into `dest` (default ./checkpoints/demo); a no-op when already there.

    Source: `zip_path` (a demo.zip on disk), else `url` (any HTTP(S) address), else Google Drive.
    """
    dest = Path(dest) if dest is not None else DEFAULT_DEST
    if all((dest / checkpoint_filename(net)).is_file() for net in NETWORKS):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pcavs-download-", dir=dest.parent) as tmp:
        work = Path(tmp)
        archive = Path(zip_path) if zip_path is not None else _fetch(url, work / "demo.zip", progress)
        staged = work / "staged"
        _extract(archive, staged)
        for net in NETWORKS:
            _verify(net, staged / checkpoint_filename(net), f"{zip_path or url or DRIVE_LINK} ({checkpoint_filename(net)})")
        if dest.exists():  # an incomplete earlier install: keep nothing of it
            shutil.rmtree(dest)
        os.replace(staged, dest)
    return dest


def ensure_weights(checkpoints: str | os.PathLike | None = None) -> Path:
    """Where the weights are (see `find_checkpoints`); with none anywhere, download them to ./checkpoints/demo."""
    try:
        return find_checkpoints(checkpoints)
    except WeightsError:
        if checkpoints is not None:
            raise
    print("pcavs: no weights yet; downloading the released checkpoint (about 600 MB) first")
    return download_weights()


def _fetch(url: str | None, target: Path, progress: bool) -> Path:
    how = f"pcavs download --from-zip demo.zip after downloading {DRIVE_LINK} by hand"
    try:
        if url is None:
            import gdown

            if gdown.download(id=DRIVE_ID, output=str(target), quiet=not progress) is None:
                raise OSError("Google Drive gave no file")
        else:
            _http_get(url, target, progress)
    except (OSError, urllib.error.URLError, ValueError) as exc:
        raise WeightsError(f"downloading the weights failed ({_reason(exc)}); check the network or run: {how}") from None
    except Exception as exc:  # gdown raises its own types for quota and permission pages
        raise WeightsError(f"downloading the weights failed ({type(exc).__name__}: {_reason(exc)}); run: {how}") from None
    return target


def _http_get(url: str, target: Path, progress: bool) -> None:
    from tqdm.auto import tqdm

    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{url} is not an http(s) address")
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(target, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc="demo.zip", disable=not progress) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    text = str(getattr(exc, "reason", None) or exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def _extract(archive: Path, staged: Path) -> None:
    """Extract the needed latest_net_*.pth files (at the zip root or in one folder) into `staged`."""
    try:
        with zipfile.ZipFile(archive) as zf:
            wanted = {checkpoint_filename(net) for net in NETWORKS}
            chosen, total = {}, 0
            for info in zf.infolist():
                path = PurePosixPath(info.filename)
                if path.is_absolute() or ".." in path.parts or info.filename.startswith(("/", "\\")):
                    raise WeightsError(f"{archive}: refusing unsafe path {info.filename!r} in the zip")
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise WeightsError(f"{archive}: refusing the link {info.filename!r} in the zip")
                if path.name in wanted and not info.is_dir():
                    if info.file_size > MAX_RATIO * max(info.compress_size, 1) or info.file_size > MAX_TOTAL_BYTES:
                        raise WeightsError(f"{archive}: {info.filename} is implausibly large; not the released demo.zip")
                    chosen[path.name] = info
                    total += info.file_size
            if total > MAX_TOTAL_BYTES:
                raise WeightsError(f"{archive}: the weights would unpack to {total >> 20} MiB; not the released demo.zip")
            missing = sorted(wanted - chosen.keys())
            if missing:
                raise WeightsError(f"{archive}: {missing[0]} is not in the zip; is this PC-AVS's demo.zip?")
            staged.mkdir()
            for name, info in chosen.items():
                with zf.open(info) as source, open(staged / name, "wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise WeightsError(f"{archive}: truncated or not a zip file ({_reason(exc)}); download it again") from None


def _verify(net: str, path: Path, label: str) -> None:
    expected = KNOWN_SHA256.get(path.name)
    if expected is not None:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != expected:
            raise WeightsError(f"{label}: SHA-256 differs from the released file; download it again")
    load_checkpoint_file(net, path, label)
