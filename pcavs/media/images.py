"""Read any photo as upright 8-bit RGB (EXIF rotation applied; grey, RGBA, 16-bit, float and CMYK converted),
encode a frame as JPEG, and resample images with anti-aliasing."""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import cv2
import numpy as np

from ..core.errors import InputError, PcavsError

MAX_PIXELS = 400_000_000  # beyond this a file is refused as a likely decompression bomb
NO_HEIF = (".heic", ".heif", ".avif")  # formats Pillow reads only with the pillow-heif plugin
JPEG_MAX_SIDE = 65500  # pixels: the most a JPEG (as libjpeg writes it) allows on either side


def read_image(src: str | os.PathLike | np.ndarray, name: str | None = None) -> np.ndarray:
    """An image file or array -> HxWx3 uint8 RGB.

    Files: anything Pillow opens, turned upright by their EXIF orientation; grey, palette,
    RGBA (composited on white), 16-bit and CMYK are converted. Arrays: see `to_rgb8`.
    `name` is how errors refer to the input (default: the path).
    """
    if isinstance(src, np.ndarray):
        return to_rgb8(src, name or "the image array")
    path = Path(src)
    label = name or str(path)
    if path.is_dir():
        raise InputError(f"{label}: is a folder, not an image file; give the path of a jpg or png")
    if not path.is_file():
        raise InputError(f"{label}: file not found; check the path")
    from PIL import Image, UnidentifiedImageError

    _register_heif()
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = None  # checked here instead, against MAX_PIXELS
            with Image.open(path) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise InputError(
                        f"{label}: image is too large ({image.width}x{image.height}; "
                        f"{MAX_PIXELS // 1_000_000} Mpixel at most); downscale it"
                    )
                return _decode(image, label)
    except UnidentifiedImageError:
        if path.suffix.lower() in NO_HEIF:
            raise InputError(f"{label}: HEIC/AVIF photos need `pip install pillow-heif`, or save the photo as jpg or png") from None
        raise InputError(f"{label}: not an image pcavs can read (is the file empty or corrupt?); use a jpg or png") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(f"{label}: the image is truncated or corrupt ({reason}); save it again as jpg or png") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _decode(image, label: str) -> np.ndarray:
    """An opened Pillow image -> upright HxWx3 uint8 RGB."""
    from PIL import ImageOps

    image.load()
    try:
        try:
            ImageOps.exif_transpose(image, in_place=True)  # Pillow >= 9.4: no copy of a huge photo
        except TypeError:
            image = ImageOps.exif_transpose(image)
    except Exception:  # a malformed EXIF block: keep the pixels as stored
        pass
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return to_rgb8(np.asarray(image), label)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        return to_rgb8(np.asarray(image.convert("RGBA")), label)
    try:
        rgb = image if image.mode == "RGB" else image.convert("RGB")
    except ValueError:
        raise InputError(f"{label}: colour mode {image.mode} is not supported; save the image as an RGB jpg or png") from None
    return np.ascontiguousarray(np.asarray(rgb))


def to_rgb8(array: np.ndarray, name: str = "the image array") -> np.ndarray:
    """Grey, RGB or RGBA pixels -> HxWx3 uint8 RGB.

    Accepted: HxW, HxWx1, HxWx3, HxWx4 of uint8; uint16 (and wider integers whose values
    exceed 255) as 16-bit; floats in [0, 1], or in [0, 255] when any value exceeds 1.5;
    bool. Alpha is composited on white. An HxWx3 uint8 array is returned as is (made contiguous).
    """
    image = np.asarray(array)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or min(image.shape[:2]) < 1:
        raise InputError(f"{name}: expected an HxW, HxWx3 or HxWx4 image, got shape {image.shape}")
    if image.dtype == np.uint8 and image.shape[2] == 3:
        return np.ascontiguousarray(image)
    if image.dtype == np.uint8 or image.dtype == np.bool_:
        scaled = image.astype(np.float32) / (1.0 if image.dtype == np.bool_ else 255.0)
    elif image.dtype.kind in "iu":
        wide = image.dtype == np.uint16 or image.max(initial=0) > 255
        scaled = image.astype(np.float32) / (65535.0 if wide else 255.0)
    elif image.dtype.kind == "f":
        scaled = np.nan_to_num(image.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        if scaled.max(initial=0.0) > 1.5:  # a 0-255 float image
            scaled /= 255.0
    else:
        raise InputError(f"{name}: unsupported pixel type {image.dtype}; give uint8, uint16 or float pixels")
    scaled = np.clip(scaled, 0.0, 1.0)
    if scaled.shape[2] == 4:
        alpha = scaled[:, :, 3:]
        scaled = scaled[:, :, :3] * alpha + (1.0 - alpha)
    if scaled.shape[2] == 1:
        scaled = np.repeat(scaled, 3, axis=2)
    return np.ascontiguousarray(np.rint(scaled * 255.0).astype(np.uint8))


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    """HxWx3 uint8 RGB -> the bytes of a JPEG file at `quality` (1 to 100), e.g. for an inline <img>."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise InputError(f"encode_jpeg: expected an HxWx3 uint8 RGB image, got {image.dtype} of shape {image.shape}; "
                         "convert it with to_rgb8")
    height, width = image.shape[:2]
    if max(height, width) > JPEG_MAX_SIDE:
        raise InputError(f"encode_jpeg: a {width}x{height} image is too large for JPEG "
                         f"({JPEG_MAX_SIDE} pixels a side at most); downscale it")
    if not 1 <= quality <= 100:
        raise InputError(f"encode_jpeg: quality must be 1 to 100, got {quality}")
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise PcavsError(f"encode_jpeg: OpenCV could not encode the {width}x{height} image as JPEG")
    return data.tobytes()


def _register_heif() -> None:
    """Let Pillow open HEIC/AVIF photos when the optional pillow-heif plugin is installed."""
    global _heif_checked
    if _heif_checked:
        return
    _heif_checked = True
    try:
        import pillow_heif
    except ImportError:
        return
    pillow_heif.register_heif_opener()


_heif_checked = False


def warp_affine(
    image: np.ndarray,
    matrix: np.ndarray,
    size: tuple[int, int],
    replicate: bool = False,
    interpolation: int = cv2.INTER_LINEAR,
    fill: tuple[float, ...] | float = 0,
) -> np.ndarray:
    """`cv2.warpAffine` with bilinear (or `interpolation`) sampling (`matrix`: 2x3, image -> output;
    `size`: (width, height)), anti-aliased: where the output samples the image more than 2x sparser,
    the part of the image it sees is first averaged over k x k blocks. Outside the image: `fill`
    (default black), or the edge pixels with `replicate`.
    """
    width, height = size
    matrix = np.asarray(matrix, np.float64)
    border = cv2.BORDER_REPLICATE if replicate else cv2.BORDER_CONSTANT
    density = math.sqrt(abs(np.linalg.det(matrix[:, :2])))  # output pixels per image pixel
    factor = int(1.0 / density) if density > 0 else 1
    if factor >= 2:
        inverse = cv2.invertAffineTransform(matrix)
        corners = np.array([[0, 0], [width, 0], [0, height], [width, height]], np.float64) @ inverse[:, :2].T + inverse[:, 2]
        h, w = image.shape[:2]
        x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - 2 * factor, 0)
        x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 2 * factor, (w, h))
        cols, rows = (x1 - x0) // factor, (y1 - y0) // factor
        if cols < 1 or rows < 1:  # the output sees none of the image
            if not replicate:
                return np.full((height, width) + image.shape[2:], fill, image.dtype)
        else:
            region = image[y0 : y0 + rows * factor, x0 : x0 + cols * factor]
            image = cv2.resize(region, (cols, rows), interpolation=cv2.INTER_AREA)
            # block (u, v) of the reduced image is centred on image pixel (x0 + k u + (k-1)/2, ...)
            offset = np.array([x0, y0]) + (factor - 1) / 2
            matrix = np.column_stack([matrix[:, :2] * factor, matrix[:, :2] @ offset + matrix[:, 2]])
    return cv2.warpAffine(image, matrix, (width, height), flags=interpolation, borderMode=border, borderValue=fill)
