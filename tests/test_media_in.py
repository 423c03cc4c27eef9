"""Media in: photos of any kind aligned by the real detector, pose videos at 25 fps, any audio container."""
from __future__ import annotations

import math
import warnings

import cv2
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from pcavs import audio
from pcavs.align import ANCHOR_TARGETS, Paster, align_frames, align_image, prepare_face, similarity_transform
from pcavs.detect import get_detector
from pcavs.errors import InputError
from pcavs.images import read_image
from pcavs.video import iter_frames, read_audio

from media import IDENTITY, counter_frame, ffmpeg, place_face, read_counter, similarity, tone, write_video


@pytest.fixture(scope="module")
def detector():
    return get_detector("litert")


@pytest.fixture(scope="module")
def crop_anchors(detector):
    return detector.detect(read_image(IDENTITY))[0].anchors


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


@pytest.mark.parametrize("scale, degrees, offset", [(1.6, 12.0, (150, 90)), (2.3, -20.0, (260, 140)), (1.0, 0.0, (40, 30))])
def test_alignment_recovers_a_known_transform(detector, crop_anchors, scale, degrees, offset):
    """The face placed by a known similarity aligns back to where the crop itself aligns (within 1.5 px)."""
    placed = similarity(scale, degrees, offset)
    canvas = place_face((720, 960), placed)
    aligned = align_image(canvas, detector)
    direct = similarity_transform(crop_anchors, ANCHOR_TARGETS)
    crop_to_canvas = np.vstack([placed, [0, 0, 1]])
    recovered = np.vstack([aligned.matrix, [0, 0, 1]]) @ crop_to_canvas
    error = np.abs(apply(recovered[:2], crop_anchors) - apply(direct, crop_anchors)).max()
    assert error < 1.5, error


def test_realigning_an_aligned_crop_is_near_identity(detector):
    matrix = align_image(read_image(IDENTITY), detector).matrix
    scale = math.hypot(*matrix[:, 0])
    angle = math.degrees(math.atan2(matrix[1, 0], matrix[0, 0]))
    assert abs(scale - 1) < 0.15 and abs(angle) < 2 and np.abs(matrix[:, 2] - (1 - scale) * 112).max() < 15


@pytest.mark.parametrize("kind", ["exif", "rgba", "grey", "16bit", "cmyk"])
def test_photo_formats_align(tmp_path, detector, kind):
    canvas = place_face((400, 360), similarity(1.2, 5, (40, 60)))
    path = tmp_path / f"face_{kind}.png"
    if kind == "exif":
        path = tmp_path / "phone.jpg"
        image = Image.fromarray(np.ascontiguousarray(np.rot90(canvas, k=1)))  # stored sideways, EXIF says turn it
        exif = image.getexif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise to display
        image.save(path, exif=exif, quality=95)
    elif kind == "rgba":
        Image.fromarray(np.dstack([canvas, np.full(canvas.shape[:2], 255, np.uint8)])).save(path)
    elif kind == "grey":
        Image.fromarray(cv2.cvtColor(canvas, cv2.COLOR_RGB2GRAY)).save(path)
    elif kind == "16bit":
        cv2.imwrite(str(path), (cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257))
    else:
        path = tmp_path / "cmyk.jpg"
        Image.fromarray(canvas).convert("CMYK").save(path, quality=95)
    image = read_image(path)
    assert image.shape == (400, 360, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - canvas.astype(int)).mean() < 12
    align_image(image, detector, name=str(path))


def test_no_face_several_faces_and_small_faces(tmp_path, detector):
    rng = np.random.default_rng(0)
    noise = (rng.random((300, 300, 3)) * 255).astype(np.uint8)
    with pytest.raises(InputError, match="no face found"):
        align_image(noise, detector, name="noise.png")
    two = np.full((480, 900, 3), 90, np.uint8)
    two[:] = np.maximum(place_face((480, 900), similarity(1.6, 0, (40, 60))), place_face((480, 900), similarity(1.1, 0, (560, 120))))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        largest = align_image(two, detector, name="group.png")
    assert any("2 faces found" in str(w.message) for w in caught)
    other = align_image(two, detector, face_index=1, name="group.png")
    assert apply(largest.inverse, ANCHOR_TARGETS)[0, 0] < 450 < apply(other.inverse, ANCHOR_TARGETS)[0, 0]
    with pytest.raises(InputError, match="face_index=5"):
        align_image(two, detector, face_index=5, name="group.png")
    tiny = place_face((400, 400), similarity(0.3, 0, (150, 150)))
    with pytest.raises(InputError, match="px wide|no face found"):
        align_image(tiny, detector, name="tiny.png")
    cut = place_face((300, 300), similarity(1.5, 0, (-120, 40)))
    with pytest.raises(InputError, match="cut off|no face found"):
        align_image(cut, detector, name="cut.png")


def test_bad_image_files(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    truncated = tmp_path / "half.png"
    truncated.write_bytes(IDENTITY.read_bytes()[:3000])
    for path in (empty, text, truncated):
        with pytest.raises(InputError) as exc:
            read_image(path)
        assert str(path) in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(InputError, match="file not found"):
        read_image(tmp_path / "missing.jpg")


def test_huge_photo_is_detected_downscaled(tmp_path):
    canvas = place_face((4500, 6000), similarity(8.0, 3, (2000, 1200)))
    path = tmp_path / "huge.jpg"
    Image.fromarray(canvas).save(path, quality=85)
    image, face = prepare_face(path)
    assert image.shape == (4500, 6000, 3) and face.crop.shape == (224, 224, 3)
    again_image, again = prepare_face(path)  # cached by content
    assert again is face


def test_pose_video_frames_resampled_to_25fps_by_time(tmp_path):
    frames = [counter_frame(i) for i in range(60)]
    for fps in (30, 24, 60):
        path = write_video(tmp_path / f"count{fps}.mp4", frames, fps)
        got = [read_counter(f) for f in iter_frames(path)]
        expected = [min(59, round(k * fps / 25)) for k in range(len(got))]
        assert len(got) == math.ceil(60 / fps * 25)
        assert max(abs(a - b) for a, b in zip(got, expected)) <= 1, (fps, got)
    # variable frame rate: frames shown for uneven durations
    times = np.cumsum([0] + [0.02 if i % 2 else 0.06 for i in range(39)])
    listing = tmp_path / "vfr.txt"
    images = []
    for i, t in enumerate(times):
        image_path = tmp_path / f"c{i:03d}.png"
        cv2.imwrite(str(image_path), counter_frame(i))
        images.append(f"file '{image_path}'\nduration {0.02 if i % 2 else 0.06}\n")
    listing.write_text("".join(images))
    vfr = tmp_path / "vfr.mp4"
    ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-fps_mode", "vfr", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(vfr))
    got = [read_counter(f) for f in iter_frames(vfr)]
    for k, value in enumerate(got[:-1]):
        shown = int(np.searchsorted(times, k / 25 + 1e-6, side="right") - 1)
        assert abs(value - shown) <= 1, (k, value, shown)


def test_rotated_phone_video_comes_out_upright(tmp_path):
    frames = [np.ascontiguousarray(np.zeros((96, 64, 3), np.uint8)) for _ in range(10)]
    plain = write_video(tmp_path / "portrait_src.mp4", frames, 25)
    rotated = tmp_path / "rotated.mp4"
    ffmpeg("-display_rotation", "90", "-i", str(plain), "-c", "copy", str(rotated))
    first = next(iter_frames(rotated))
    assert first.shape[:2] == (64, 96)


def test_aligning_a_moving_face_keeps_the_mouth_in_place(detector):
    frames = []
    for i in range(8):
        frames.append(place_face((360, 480), similarity(1.3 + 0.02 * i, 2.0 * i, (100 + 6 * i, 50 + 3 * i))))
    frames[3] = np.full_like(frames[3], 90)  # no face in this frame: filled from its neighbours
    crops = list(align_frames(lambda: iter(frames), detector))
    assert len(crops) == 8
    for crop in crops[:3] + crops[4:]:
        mouth = detector.detect(crop)[0].anchors[2]
        assert np.abs(mouth - ANCHOR_TARGETS[2]).max() < 8
    with pytest.raises(InputError, match="no face found in any frame"):
        list(align_frames(lambda: iter([frames[3]] * 3), detector))


def test_paste_back_keeps_the_background():
    background = (np.random.default_rng(1).random((300, 400, 3)) * 255).astype(np.uint8)
    matrix = similarity_transform(np.array([[150.0, 120], [190, 120], [170, 170]]), ANCHOR_TARGETS)
    out = Paster(background, matrix)(np.zeros((224, 224, 3), np.uint8))
    assert np.array_equal(out[:, :40], background[:, :40]) and np.array_equal(out[260:], background[260:])
    assert out[135, 170].max() < 20  # the face centre is replaced


@pytest.mark.parametrize("suffix, codec", [("wav", "pcm_s16le"), ("mp3", "libmp3lame"), ("m4a", "aac"), ("ogg", "libvorbis"),
                                           ("opus", "libopus"), ("flac", "flac"), ("mp4", "aac")])
def test_audio_containers_decode_to_the_same_signal(tmp_path, suffix, codec):
    source = tmp_path / "source.wav"
    reference = tone(1.5, 16000)
    sf.write(source, reference, 16000, subtype="PCM_16")
    path = tmp_path / f"speech.{suffix}"
    extra = ("-f", "lavfi", "-i", "color=black:s=64x64:d=1.5") if suffix == "mp4" else ()
    ffmpeg(*extra, "-i", str(source), "-c:a", codec, *(("-c:v", "libx264", "-shortest") if extra else ()), str(path))
    decoded = audio.load_audio(path)
    assert abs(len(decoded) - len(reference)) < 0.08 * 16000
    n = min(len(decoded), len(reference))
    lag = int(np.argmax(np.correlate(decoded[:8000], reference[:4000], "valid"))) if len(decoded) > 8000 else 0
    aligned = decoded[lag:n]
    correlation = np.corrcoef(aligned, reference[: len(aligned)])[0, 1]
    assert correlation > 0.98, (suffix, lag, correlation)


@pytest.mark.parametrize("rate, channels", [(8000, 1), (44100, 2), (48000, 2), (22050, 1)])
def test_rates_and_channels_give_the_right_length(tmp_path, rate, channels):
    path = tmp_path / f"a{rate}.wav"
    sf.write(path, tone(1.3, rate, channels), rate)
    samples, native = read_audio(path)
    assert native == rate and samples.ndim == 1
    decoded = audio.load_audio(path)
    assert abs(len(decoded) - round(1.3 * 16000)) <= 2
    assert audio.num_frames(len(decoded)) == math.ceil(1.3 * 25)


def test_video_without_audio_and_corrupt_audio(tmp_path):
    silent_video = write_video(tmp_path / "silent.mp4", [counter_frame(1)] * 5, 25)
    with pytest.raises(InputError, match="no audio track"):
        audio.load_audio(silent_video)
    broken = tmp_path / "broken.mp3"
    broken.write_bytes(b"ID3" + bytes(200))
    with pytest.raises(InputError) as exc:
        audio.load_audio(broken)
    assert "broken.mp3" in str(exc.value)


@pytest.mark.parametrize("name, package", [("mediapipe", "mediapipe"), ("face_alignment", "face_alignment")])
def test_optional_backends_say_how_to_install(name, package, monkeypatch):
    import importlib.util

    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    get_detector.cache_clear()
    with pytest.raises(InputError, match=r"pip install pcavs\["):
        get_detector(name)
    with pytest.raises(InputError, match="not one of"):
        get_detector("dlib")
