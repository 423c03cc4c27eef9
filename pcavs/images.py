"""Read any photo as upright 8-bit RGB: EXIF rotation applied; grey, RGBA, 16-bit and CMYK converted."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from .errors import InputError

MAX_PIXELS = 400_000_000  # beyond this a file is refused as a likely decompression bomb


def read_image(src: str | os.PathLike | np.ndarray, name: str | None = None) -> np.ndarray:
    """An image path or array -> HxWx3 uint8 RGB."""
    if isinstance(src, np.ndarray):
        return to_rgb8(src, name or "image array")
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(src)
    label = name or str(path)
    if not path.is_file():
        raise InputError(f"{label}: file not found")
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image = ImageOps.exif_transpose(image)
                if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                    return to_rgb8(np.asarray(image), label)
                if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                    return to_rgb8(np.asarray(image.convert("RGBA")), label)
                return np.ascontiguousarray(np.asarray(image.convert("RGB")))
    except UnidentifiedImageError:
        raise InputError(f"{label}: not an image pcavs can read (is the file empty or corrupt? use jpg or png)") from None
    except Image.DecompressionBombError:
        raise InputError(f"{label}: image is too large ({MAX_PIXELS // 1_000_000} Mpixel at most); downscale it") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{label}: the image is truncated or corrupt ({exc}); save it again as jpg or png") from None


def to_rgb8(array: np.ndarray, name: str) -> np.ndarray:
    """Grey, RGB or RGBA arrays of uint8, uint16 or float in [0, 1] -> HxWx3 uint8 (alpha composited on white)."""
    image = np.asarray(array)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or min(image.shape[:2]) < 1:
        raise InputError(f"{name}: expected an HxW, HxWx3 or HxWx4 image, got shape {image.shape}")
    if image.dtype == np.uint8:
        scaled = image.astype(np.float32) / 255.0
    elif image.dtype == np.uint16 or (image.dtype.kind in "iu" and image.max(initial=0) > 255):
        scaled = image.astype(np.float32) / 65535.0
    elif image.dtype.kind in "iu":
        scaled = image.astype(np.float32) / 255.0
    elif image.dtype.kind == "f":
        scaled = np.nan_to_num(image.astype(np.float32))
    else:
        raise InputError(f"{name}: unsupported pixel type {image.dtype}")
    if image.shape[2] == 4:
        alpha = scaled[:, :, 3:]
        scaled = scaled[:, :, :3] * alpha + (1.0 - alpha)
    if scaled.shape[2] == 1:
        scaled = np.repeat(scaled, 3, axis=2)
    if image.dtype == np.uint8 and image.shape[2] == 3:
        return np.ascontiguousarray(image)
    return np.ascontiguousarray(np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8))
