"""Reading photos of every kind as upright 8-bit RGB, refusing bad files in one line, JPEG encoding, and
anti-aliased warps."""
from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from pcavs.core.errors import InputError
from pcavs.media.images import JPEG_MAX_SIDE, encode_jpeg, read_image, to_rgb8, warp_affine

from support.faces import IDENTITY, identity_crop


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A non-square photo (so a wrong rotation shows): the kit's face with a bar on its right."""
    image = np.full((224, 300, 3), 30, np.uint8)
    image[:, :224] = identity_crop()
    image[:, 260:280] = (250, 40, 40)
    return image


def close(a: np.ndarray, b: np.ndarray, levels: float) -> bool:
    return a.shape == b.shape and float(np.abs(a.astype(int) - b.astype(int)).mean()) < levels


@pytest.mark.parametrize("orientation, turn", [(3, 2), (6, 1), (8, 3)])
def test_exif_rotated_jpeg_comes_out_upright(tmp_path, photo, orientation, turn):
    # stored turned; the EXIF Orientation tag says how to turn it back for display
    stored = np.ascontiguousarray(np.rot90(photo, k=turn))
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "phone.jpg"
    image.save(path, exif=exif, quality=95)
    got = read_image(path)
    assert got.dtype == np.uint8 and close(got, photo, 4)


def test_rgba_png_is_composited_on_white(tmp_path, photo):
    alpha = np.full(photo.shape[:2], 255, np.uint8)
    alpha[:, 250:] = 0  # the right edge transparent
    path = tmp_path / "cutout.png"
    Image.fromarray(np.dstack([photo, alpha])).save(path)
    got = read_image(path)
    assert got.shape == photo.shape
    assert np.array_equal(got[:, :250], photo[:, :250]) and (got[:, 250:] == 255).all()


def test_grey_16bit_cmyk_palette_and_bilevel_files(tmp_path, photo):
    grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    cases = {
        "grey.png": (lambda p: Image.fromarray(grey).save(p), np.dstack([grey] * 3), 1),
        "grey16.png": (lambda p: cv2.imwrite(str(p), grey.astype(np.uint16) * 257), np.dstack([grey] * 3), 1),
        "rgb16.png": (lambda p: cv2.imwrite(str(p), photo[:, :, ::-1].astype(np.uint16) * 257), photo, 1),
        "cmyk.jpg": (lambda p: Image.fromarray(photo).convert("CMYK").save(p, quality=95), photo, 6),
        "palette.png": (lambda p: Image.fromarray(photo).quantize(256).save(p), photo, 12),
        "bilevel.png": (lambda p: Image.fromarray(grey > 128).save(p), np.dstack([(grey > 128) * 255] * 3), 1),
        "photo.webp": (lambda p: Image.fromarray(photo).save(p, quality=95), photo, 6),
    }
    for name, (save, expected, levels) in cases.items():
        path = tmp_path / name
        save(path)
        got = read_image(path)
        assert got.dtype == np.uint8 and got.flags.c_contiguous, name
        assert close(got, expected.astype(np.uint8), levels), name


def test_arrays_of_any_layout_and_depth(photo):
    grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    assert read_image(photo) is photo  # already 8-bit RGB: no copy
    assert np.array_equal(read_image(grey), np.dstack([grey] * 3))
    assert np.array_equal(read_image(grey[:, :, None]), np.dstack([grey] * 3))
    assert np.array_equal(read_image(photo.astype(np.uint16) * 257), photo)
    assert np.array_equal(read_image(photo / 255.0), photo)
    assert np.array_equal(read_image(photo.astype(np.float32)), photo)  # 0-255 floats
    assert np.array_equal(read_image(np.dstack([photo, np.full(grey.shape, 255, np.uint8)])), photo)
    assert (read_image(np.zeros((4, 5), bool)) == 0).all() and (read_image(np.ones((4, 5), bool)) == 255).all()
    half = read_image(np.dstack([np.zeros((2, 2, 3), np.uint8), np.full((2, 2), 128, np.uint8)]))
    assert (half == 127).all()  # half transparent black over white
    nan = np.full((3, 3), np.nan)
    assert (read_image(nan) == 0).all()
    flipped = photo[::-1, ::-1]
    assert read_image(flipped).flags.c_contiguous and np.array_equal(read_image(flipped), flipped)


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 2), np.uint8), np.zeros((0, 4, 3), np.uint8), np.zeros(5, np.uint8),
                                 np.zeros((3, 3), complex)])
def test_bad_arrays_are_refused_by_name(bad):
    with pytest.raises(InputError, match="my frame"):
        read_image(bad, name="my frame")


def test_bad_files_name_the_file_in_one_line(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image at all")
    truncated_png = tmp_path / "half.png"
    truncated_png.write_bytes(IDENTITY.read_bytes()[:3000])
    truncated_jpg = tmp_path / "half.jpg"
    Image.fromarray(identity_crop()).save(tmp_path / "whole.jpg", quality=90)
    truncated_jpg.write_bytes((tmp_path / "whole.jpg").read_bytes()[:1500])
    heic = tmp_path / "iphone.heic"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    folder = tmp_path / "frames"
    folder.mkdir()
    cases = [(empty, "not an image"), (text, "not an image"), (truncated_png, "truncated or corrupt"),
             (truncated_jpg, "truncated or corrupt"), (heic, "pillow-heif|not an image"), (folder, "folder"),
             (tmp_path / "missing.jpg", "file not found")]
    for path, reason in cases:
        with pytest.raises(InputError, match=reason) as caught:
            read_image(path)
        message = str(caught.value)
        assert message.startswith(str(path)) and "\n" not in message, message


def test_error_names_the_given_name(tmp_path):
    with pytest.raises(InputError, match="^reference photo 2: file not found"):
        read_image(tmp_path / "nope.png", name="reference photo 2")


def test_encode_jpeg_round_trips_through_opencv(photo):
    data = encode_jpeg(photo)
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"  # a whole JPEG file: start and end markers
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]  # BGR back to RGB
    assert close(decoded, photo, 4)  # the colours kept in RGB order: the red bar stays red
    assert decoded[100, 270, 0] > 200 and decoded[100, 270, 2] < 90
    small, large = len(encode_jpeg(photo, quality=30)), len(encode_jpeg(photo, quality=95))
    assert small < len(data) < large < photo.nbytes  # quality sets the size; any of them smaller than the pixels


@pytest.mark.parametrize("image, quality, words", [
    (np.zeros((8, 8), np.uint8), 85, "expected an HxWx3 uint8 RGB image"),
    (np.zeros((8, 8, 3), np.float32), 85, "got float32 of shape (8, 8, 3)"),
    (np.zeros((0, 8, 3), np.uint8), 85, "expected an HxWx3 uint8 RGB image"),
    (np.zeros((1, JPEG_MAX_SIDE + 1, 3), np.uint8), 85, "too large for JPEG"),
    (np.zeros((8, 8, 3), np.uint8), 0, "quality must be 1 to 100"),
])
def test_encode_jpeg_refuses_what_jpeg_cannot_hold(image, quality, words):
    with pytest.raises(InputError) as caught:
        encode_jpeg(image, quality)
    assert str(caught.value).startswith("encode_jpeg: ") and words in str(caught.value)


def test_warp_matches_opencv_when_not_shrinking():
    image = identity_crop()
    matrix = cv2.getRotationMatrix2D((100, 90), 17, 0.7)
    expected = cv2.warpAffine(image, matrix, (160, 150), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    assert np.array_equal(warp_affine(image, matrix, (160, 150)), expected)


def test_warp_anti_aliases_and_keeps_geometry():
    # a fine checkerboard shrunk 8x: averaging gives flat grey, plain bilinear sampling gives noise
    y, x = np.mgrid[0:800, 0:800]
    board = np.where((x + y) % 2 == 0, 255, 0).astype(np.uint8)
    shrink = np.array([[0.125, 0.0, 0.0], [0.0, 0.125, 0.0]])
    smooth = warp_affine(board, shrink, (100, 100))
    assert abs(float(smooth[5:-5, 5:-5].mean()) - 127.5) < 2 and smooth[5:-5, 5:-5].std() < 2
    # geometry: a ramp image shrunk 4x and shifted has the value the affine map predicts
    ramp = np.tile(np.arange(1000, dtype=np.float32), (200, 1))
    matrix = np.array([[0.25, 0.0, 3.0], [0.0, 0.25, 0.0]])
    out = warp_affine(ramp, matrix, (200, 40))
    expected = (np.arange(200) - 3.0) / 0.25  # image x whose output column this is
    assert np.abs(out[20, 10:-10] - expected[10:-10]).max() < 1e-3
    # outside the image: black, or the edge with replicate=True
    far = np.array([[0.1, 0.0, -500.0], [0.0, 0.1, 0.0]])
    assert (warp_affine(np.full((300, 300, 3), 200, np.uint8), far, (20, 20)) == 0).all()
    assert (warp_affine(np.full((300, 300, 3), 200, np.uint8), far, (20, 20), replicate=True) == 200).all()


def test_to_rgb8_keeps_the_default_name():
    with pytest.raises(InputError, match="the image array"):
        to_rgb8(np.zeros((2, 2, 5), np.uint8))


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    """A PNG whose header claims 30000x20000 pixels (600 Mpixel) is refused from its header alone."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path = tmp_path / "bomb.png"
    header = struct.pack(">IIBBBBB", 30000, 20000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(InputError, match=r"bomb.png: image is too large \(30000x20000"):
        read_image(path)
    assert Image.MAX_IMAGE_PIXELS == limit  # Pillow's own setting is left as it was
