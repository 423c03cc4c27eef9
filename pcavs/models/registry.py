"""Every published model's weights in one table (`MODELS`), and `find`, which says where they are installed.

One `Weights` entry per model: the files it installs, where they come from (the URL, and the
SHA-256 and size its publishers state), the environment variable that points at them, its folder
in the user cache, and the function that loads one of its files strictly. That function is named
as "module:function" and imported on first use, because the networks of GFPGAN and SyncNet live
in `pcavs.restore` and `pcavs.metrics`, layers above this one. `download.py` installs an entry
(`install`, `ensure`) and checks an installed one (`check`); the CLI's `pcavs download <name>` is
built from this table. Adding a model is one entry.

Where pcavs looks, for every model: the path given, else the one in its environment variable,
else its local folders, else the user cache. A path given or set in the variable must hold the
weights (a WeightsError names it); only the default places are passed over when empty.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import WeightsError
from ..core.files import cache_dir

DRIVE_ID = "1Zehr3JLIpzdg2S5zZrhIbpYPKF-4gKU_"  # PC-AVS's demo.zip on Google Drive
DRIVE_LINK = f"https://drive.google.com/file/d/{DRIVE_ID}"


@dataclass(frozen=True)
class Published:
    """What the publishers of a released file state about it: its name, SHA-256 (hex) and size in bytes."""

    name: str
    sha256: str
    size: int

    def differs(self, sha256: str, size: int) -> bool:
        """Whether a file with this SHA-256 and size is not this one."""
        return size != self.size or sha256 != self.sha256.lower()

    def mismatch(self, source: str, sha256: str, size: int, todo: str) -> WeightsError:
        """The error for a file from `source` that is not this one; it names both hashes and both sizes."""
        return WeightsError(f"{source}: not the published {self.name}: SHA-256 {sha256} ({size:,} bytes), expected "
                            f"{self.sha256} ({self.size:,} bytes); {todo}")


@dataclass(frozen=True)
class Weights:
    """One published model's weights: what they are, where they come from, where they go and how they load."""

    name: str  # as the CLI spells it: `pcavs download <name>`
    title: str  # in messages
    files: tuple[str, ...]  # what an install puts in its folder
    url: str  # the official source (Google Drive links are fetched with gdown)
    env: str  # the environment variable that points at them
    cache: str  # their folder in the user cache ("" is the cache itself)
    loader: str  # "module:function", function(path, label) raises WeightsError unless the file loads strictly
    size_text: str  # the download's size, in words
    published: Published | None = None  # the download's SHA-256 and size, when its publishers state them
    archive: str | None = None  # the zip the files come packed in; None: the download is the one file
    local: tuple[str, ...] = ()  # folders looked in before the user cache, relative to the working folder

    @property
    def command(self) -> str:
        """The command that installs them."""
        return "pcavs download" if self.name == "pcavs" else f"pcavs download {self.name}"

    @property
    def download_name(self) -> str:
        """The file a download fetches: the archive, else the one file."""
        return self.archive or self.files[0]

    @property
    def source_option(self) -> str:
        """The CLI option that installs a copy the user downloaded by hand."""
        return "--from-zip" if self.archive else "--from-file"

    @property
    def hint(self) -> str:
        """What to do when they are missing."""
        return f"run `{self.command}` (or `{self.command} {self.source_option} {self.download_name}`)"

    @property
    def by_hand(self) -> str:
        """The way round a download that fails."""
        return f"download {self.url} by hand and run `{self.command} {self.source_option} {self.download_name}`"

    def default_path(self) -> Path:
        """Where an install puts them by default: their folder in the user cache (a single file: the file in it)."""
        folder = cache_dir() / self.cache
        return folder if self.archive else folder / self.files[0]

    def places(self) -> list[Path]:
        """Where pcavs looks when no path is given or set: the local folders, then the user cache."""
        return [Path(folder) for folder in self.local] + [self.default_path()]

    def target(self, dest: str | os.PathLike | None) -> Path:
        """Where an install into `dest` puts them: the folder itself, or a single file's path (a folder: the file in it)."""
        if dest is None:
            return self.default_path()
        path = Path(dest).expanduser()
        if self.archive is None and (path.is_dir() or path.suffix != Path(self.files[0]).suffix):
            return path / self.files[0]
        return path

    def installed_at(self, path: Path) -> Path | None:
        """What pcavs loads from `path`: the folder of the files (or a slim .safetensors, for PC-AVS), the file
        (a folder: the file in it); None when `path` holds no such thing."""
        if self.archive:
            if path.is_file():
                return path if path.suffix == ".safetensors" else None
            return path if all((path / name).is_file() for name in self.files) else None
        file = path / self.files[0] if path.is_dir() else path
        return file if file.is_file() else None

    def verify(self, path: Path, label: str) -> None:
        """Raise WeightsError (naming `label`) unless the file at `path` loads strictly."""
        module, _, function = self.loader.partition(":")
        getattr(importlib.import_module(module), function)(path, label)


PCAVS = Weights(
    "pcavs", "PC-AVS", tuple(f"latest_net_{net}.pth" for net in ("G", "V", "E", "A_sync")), DRIVE_LINK,
    "PCAVS_CHECKPOINTS", "demo", "pcavs.models.weights:verify_file", "about 600 MB", archive="demo.zip",
    local=("checkpoints/demo",),
)  # demo.zip's hash is not published: the SHA-256 of each unpacked file is recorded at install (weights.RECORD)
GFPGAN = Weights(
    "gfpgan", "GFPGAN v1.4", ("GFPGANv1.4.pth",),
    "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth",
    "PCAVS_GFPGAN", "gfpgan", "pcavs.restore.weights:verify_checkpoint", "349 MB",
    Published("GFPGANv1.4.pth", "e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad", 348_632_874),
)
SYNCNET = Weights(
    "syncnet", "SyncNet", ("syncnet_v2.model",),
    "https://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model",
    "PCAVS_SYNCNET", "", "pcavs.metrics.syncnet:load_syncnet", "55 MB",
    Published("syncnet_v2.model", "961e8696f888fce4f3f3a6c3d5b3267cf5b343100b238e79b2659bff2c605442", 54_573_114),
)
MODELS: dict[str, Weights] = {weights.name: weights for weights in (PCAVS, GFPGAN, SYNCNET)}


def find(name: str, given: str | os.PathLike | None = None) -> Path:
    """Where the weights of the model `name` are: `given`, else $<its env>, else its local folders and the user cache.

    The path returned exists. A WeightsError (one line) names a `given` or $<env> path that does
    not hold them, or every place looked in, and says what to do.
    """
    weights = MODELS[name]
    if given is not None:
        return _holding(weights, Path(given).expanduser(), "", weights.hint)
    env = os.environ.get(weights.env)
    if env:
        return _holding(weights, Path(env).expanduser(), f" (${weights.env})", f"{weights.hint}, or unset ${weights.env}")
    looked = weights.places()
    for path in looked:
        found = weights.installed_at(path)
        if found is not None:
            return found
    raise WeightsError(f"no {weights.title} weights found (looked in {', '.join(map(str, looked))}); {weights.hint}")


def _holding(weights: Weights, path: Path, origin: str, todo: str) -> Path:
    """`path` as `installed_at` gives it, else a WeightsError naming the missing file and where its path came from."""
    found = weights.installed_at(path)
    if found is not None:
        return found
    if not path.exists():
        raise WeightsError(f"{path}{origin}: no such file or folder; {todo}")
    if weights.archive and path.is_file():
        raise WeightsError(f"{path}{origin}: not a folder of {weights.title} weights or a slim .safetensors file; {todo}")
    missing = next(path / name for name in weights.files if not (path / name).is_file())
    raise WeightsError(f"{missing}{origin}: file not found; {todo}")
