"""Turn what the user passes as `face=`, `pose=` and `mouth=` into aligned 224x224 crops.

A source is a path (image, video or folder of frames), a list of paths or RGB arrays,
or one RGB array. With `aligned=True` the images already are PC-AVS crops and no
detection runs.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, Union

import numpy as np

from .align import AlignedFace, align_frames, align_image, prepare_face
from .detect import get_detector
from ..core.errors import InputError
from ..core.facts import CROP_SIZE
from ..media.images import read_image
from ..media.video import iter_frames

Media = Union[str, os.PathLike, np.ndarray]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".heic"}
IDENTITY_MATRIX = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


@dataclass
class Identity:
    """One reference photo: the full image and its alignment."""

    image: np.ndarray
    face: AlignedFace


def describe(item: Media) -> str:
    return "an array" if isinstance(item, np.ndarray) else str(item)


def as_list(value: Media | Sequence[Media]) -> list[Media]:
    if isinstance(value, (str, os.PathLike, np.ndarray)):
        return [value]
    return list(value)


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _checked_crop(image: np.ndarray, name: str) -> np.ndarray:
    if image.shape[:2] != (CROP_SIZE, CROP_SIZE):
        height, width = image.shape[:2]
        raise InputError(
            f"{name}: is {width}x{height}, but aligned=True needs {CROP_SIZE}x{CROP_SIZE} PC-AVS crops; "
            "pass aligned=False to detect and align the face"
        )
    return image


def load_identities(face: Media | Sequence[Media], aligned: bool, detector: str, face_index: int | None) -> list[Identity]:
    """Read and align every reference photo."""
    identities = []
    for item in as_list(face):
        if aligned:
            crop = _checked_crop(read_image(item, name=describe(item)), describe(item))
            identities.append(Identity(crop, AlignedFace(crop, IDENTITY_MATRIX.copy(), crop.shape[:2])))
        else:
            image, aligned_face = prepare_face(item, detector_name=detector, face_index=face_index)
            identities.append(Identity(image, aligned_face))
    return identities


def frame_stream(source: Media | Sequence[Media]) -> tuple[Callable[[], Iterable[np.ndarray]], str, bool]:
    """A re-startable stream of RGB frames for a pose or mouth source, its name, and whether it is one still image."""
    if isinstance(source, np.ndarray):
        return (lambda: [read_image(source)]), "an array", True
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if is_image_file(p))
            if not files:
                raise InputError(f"{path}: folder holds no image frames (png, jpg, ...); give a video or a folder of frames")
            return (lambda: (read_image(p) for p in files)), str(path), False
        if not path.exists():
            raise InputError(f"{path}: file not found")
        if is_image_file(path):
            return (lambda: [read_image(path)]), str(path), True
        return (lambda: iter_frames(path)), str(path), False
    items = as_list(source)
    if not items:
        raise InputError("pose: the list of frames is empty; give frames, a video, an image or None")
    return (lambda: (read_image(item, name=describe(item)) for item in items)), "the frame list", len(items) == 1


def aligned_frames(source: Media | Sequence[Media], aligned: bool, detector: str, limit: int) -> Iterator[np.ndarray]:
    """Aligned crops of a pose or mouth source, at most `limit` of them, streamed."""
    frames, name, still = frame_stream(source)
    if aligned:
        return (_checked_crop(image, name) for image in itertools.islice(frames(), limit))
    if still:
        image = next(iter(frames()))
        return iter([align_image(image, get_detector(detector), name=name).crop])
    return align_frames(lambda: itertools.islice(frames(), limit), get_detector(detector), name=name)
