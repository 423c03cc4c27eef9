"""GFPGAN v1.4's weights: where they are, how they are installed, and loading them strictly.

The released `GFPGANv1.4.pth` (TencentARC/GFPGAN, release v1.3.0; Apache-2.0 code, weights
trained on FFHQ) is downloaded on the user's request, never shipped. It is a dict
`{"params_ema": state_dict}` (or `"params"`), zip or legacy torch format; it is read with
`weights_only=True`, every key and shape is checked against the network, and the tensors
restoration never reads are dropped. Faces are 512x512 RGB in GFPGAN's aligned (FFHQ) frame.
"""
from __future__ import annotations

import gc
import os
from pathlib import Path

from ..core.errors import NetworkError, WeightsError
from ..core.files import cache_dir
from ..models import checkpoint
from ..models.download import Published, check_file, fetch_file
from .gfpgan import GFPGAN, unused_shapes

FILENAME = "GFPGANv1.4.pth"
URL = "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth"
PUBLISHED = Published(FILENAME, "e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad", 348_632_874)
CONTAINER_KEYS = ("params_ema", "params")  # GFPGAN's loader prefers the EMA weights
ENV = "PCAVS_GFPGAN"
CACHE_SUBDIR = "gfpgan"
DOWNLOAD_HINT = "run `pcavs download gfpgan` (or `pcavs download gfpgan --from-file GFPGANv1.4.pth`)"


def default_path() -> Path:
    """Where `pcavs download gfpgan` installs the checkpoint: the user cache."""
    return cache_dir() / CACHE_SUBDIR / FILENAME


def _in_folder(path: Path) -> Path:
    return path / FILENAME if path.is_dir() else path


def candidates(checkpoint: str | os.PathLike | None = None) -> list[Path]:
    """Where pcavs looks, in order: the argument, else $PCAVS_GFPGAN, else the user cache (a folder means its GFPGANv1.4.pth)."""
    if checkpoint is not None:
        return [_in_folder(Path(checkpoint).expanduser())]
    env = os.environ.get(ENV)
    return ([_in_folder(Path(env).expanduser())] if env else []) + [default_path()]


def find_checkpoint(checkpoint: str | os.PathLike | None = None) -> Path:
    """The first checkpoint file of `candidates`; a WeightsError naming where pcavs looked when there is none."""
    looked = candidates(checkpoint)
    for path in looked:
        if path.is_file():
            return path
    raise WeightsError(f"no GFPGAN v1.4 weights found (looked in {', '.join(map(str, looked))}); {DOWNLOAD_HINT}")


def download_checkpoint(
    dest: str | os.PathLike | None = None,
    url: str | None = None,
    from_file: str | os.PathLike | None = None,
    progress: bool = True,
    verify: bool = True,
) -> Path:
    """Install GFPGANv1.4.pth (from the release, another http(s) `url`, or a copy the user has) at `dest`: a file
    path, or a folder (default: the user cache).

    It must be the published file (SHA-256 and size, checked as it streams) and load strictly
    before it is renamed into place; `verify=False` installs a local copy that is not the
    published file, with a warning.
    """
    target = default_path() if dest is None else Path(dest).expanduser()
    if dest is not None and (target.is_dir() or target.suffix != ".pth"):
        target = target / FILENAME
    source = str(from_file) if from_file is not None else url or URL
    return fetch_file(url or URL, target, lambda temp: verify_checkpoint(temp, source), published=PUBLISHED,
                      from_file=from_file, verify=verify, progress=progress, command="pcavs download gfpgan")


def check_installed(checkpoint: str | os.PathLike | None = None) -> str:
    """`pcavs download gfpgan --check`: the checkpoint pcavs would use is the published file and loads strictly."""
    return check_file(find_checkpoint(checkpoint), PUBLISHED, verify_checkpoint, "pcavs download gfpgan")


def ensure_checkpoint(checkpoint: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """`find_checkpoint`; when there is none anywhere (and no path was given), download it into the user cache."""
    try:
        return find_checkpoint(checkpoint)
    except WeightsError:
        if checkpoint is not None:
            raise
    looked = ", ".join(map(str, candidates()))
    print(f"pcavs: no GFPGAN v1.4 weights yet; downloading {FILENAME} (349 MB) from the GFPGAN release into {default_path().parent}")
    try:
        return download_checkpoint(progress=progress)
    except NetworkError as exc:
        raise NetworkError(f"no GFPGAN v1.4 weights found (looked in {looked}) and {exc}") from None


def read_checkpoint(path: str | os.PathLike, label: str | None = None) -> dict:
    """The state dict inside a GFPGAN checkpoint (`params_ema`, else `params`), read safely."""
    return checkpoint.read_state_dict(path, label or str(path), DOWNLOAD_HINT, inside=CONTAINER_KEYS)


def check_state_dict(state: dict, label: str) -> None:
    """Strict key and shape check against GFPGAN v1.4 plus the tensors restoration never reads."""
    expected = checkpoint.expected_keys(GFPGAN, unused_shapes())
    checkpoint.check_state_dict(state, expected, label, "GFPGAN v1.4", DOWNLOAD_HINT)


def load_gfpgan(path: str | os.PathLike, label: str | None = None) -> GFPGAN:
    """The network from a checkpoint file (on the CPU, float32, eval mode), holding only what restoration reads."""
    state = read_checkpoint(path, label)
    check_state_dict(state, label or str(path))
    return checkpoint.build(GFPGAN, state)


def verify_checkpoint(path: Path, label: str | None = None) -> None:
    """Raise WeightsError (naming `label`, default the path) unless `path` loads as GFPGAN v1.4:
    the check a download must pass before it is installed."""
    load_gfpgan(path, label)
    gc.collect()  # let go of the memory-mapped file before it is renamed (Windows)


