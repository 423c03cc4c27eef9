"""enhance="gfpgan" in a job: the real CLI on a 1080p photo, the crop and grid frames, the blend weight,
the flicker remedy, and the GFPGAN download (a loopback server, never the network; the synthesized
checkpoint is not the published file, so a download of it is refused and a local copy needs --no-verify). Restoring a 512
face costs seconds on a CPU, so every job here is one to three frames long."""
from __future__ import annotations

import hashlib
import math
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf

import pcavs
from support.gfpgan_weights import FILENAME
from support.kits import INPUTS
from support.loopback import serve
from support.av import ffmpeg
from pcavs.models import registry
from pcavs.models.registry import GFPGAN, find
from pcavs.restore import weights as enhance
from pcavs.restore.restorer import Restorer
from pcavs.faces.align import Paster, crop_to_generated, prepare_face, transform_points
from pcavs.app.cli import main
from pcavs.core.assets import DEMO_FACE
from pcavs.generation.enhance import ResidualSmoother
from pcavs.core.errors import NetworkError, WeightsError
from pcavs.faces.ffhq import SIZE, photo_to_ffhq, warp_to_ffhq
from pcavs.media.probe import probe
from pcavs.media.images import read_image
from pcavs.media.audio import read_audio
from pcavs.media.video import iter_frames

IDENTITY = INPUTS / "identity" / "000000.png"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pcavs", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> dict[str, Path]:
    """One frame of the kit's speech as wav, and about three as mp3."""
    folder = tmp_path_factory.mktemp("speech")
    data, rate = sf.read(INPUTS / "speech_short.wav", dtype="float32")
    sf.write(folder / "one.wav", data[: rate // 25], rate)
    sf.write(folder / "short.wav", data[: rate // 10], rate)
    ffmpeg("-i", str(folder / "short.wav"), "-c:a", "libmp3lame", "-b:a", "96k", str(folder / "a.mp3"))
    return {"one": folder / "one.wav", "mp3": folder / "a.mp3"}


@pytest.fixture(scope="module")
def photo_1080p(tmp_path_factory) -> Path:
    """The bundled portrait enlarged into a textured 1920x1080 scene, saved as a jpg."""
    rng = np.random.default_rng(7)
    scene = cv2.GaussianBlur(rng.integers(40, 220, (1080, 1920, 3), np.uint8), (0, 0), 3)
    scene[:, :, 0] = np.linspace(30, 200, 1920, dtype=np.float32).astype(np.uint8)[None]
    portrait = cv2.resize(read_image(DEMO_FACE), (880, 880), interpolation=cv2.INTER_CUBIC)
    scene[100:980, 560:1440] = portrait
    path = tmp_path_factory.mktemp("photo") / "photo.jpg"
    cv2.imwrite(str(path), scene[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    return path


def footprint(photo: Path, margin: int = 8) -> tuple[slice, slice]:
    """The photo's box that GFPGAN's 512 frame covers (from the photo's detected alignment), plus a margin."""
    _, face = prepare_face(photo)
    inverse = cv2.invertAffineTransform(photo_to_ffhq(face.matrix))
    corners = transform_points(inverse, np.array([[0, 0], [SIZE, 0], [0, SIZE], [SIZE, SIZE]], np.float64))
    (x0, y0), (x1, y1) = np.floor(corners.min(0)).astype(int) - margin, np.ceil(corners.max(0)).astype(int) + margin
    return slice(max(y0, 0), y1), slice(max(x0, 0), x1)


@pytest.mark.slow
def test_cli_enhances_a_1080p_photo(tmp_path, speech, photo_1080p, gfpgan_checkpoint):
    plain, sharp = tmp_path / "plain.mp4", tmp_path / "sharp video.mp4"
    common = ("--face", str(photo_1080p), "--audio", str(speech["mp3"]), "--quiet")
    done = cli("generate", *common, "--out", str(plain))
    assert done.returncode == 0, done.stderr
    done = cli("generate", *common, "--enhance", "gfpgan", "--enhance-checkpoint", str(gfpgan_checkpoint), "--out", str(sharp))
    assert done.returncode == 0, done.stderr

    info = probe(sharp)
    assert (info.width, info.height, info.video_codec, info.audio_codec, info.fps) == (1920, 1080, "h264", "aac", 25.0)
    samples, rate = read_audio(speech["mp3"], mono=True)
    frames, before = list(iter_frames(sharp)), list(iter_frames(plain))
    assert len(frames) == len(before) == math.ceil(len(samples) / rate * 25)
    out_audio, out_rate = read_audio(sharp)
    assert abs(len(out_audio) / out_rate - len(frames) / 25) <= 1 / 25

    photo = read_image(photo_1080p).astype(int)
    rows, cols = footprint(photo_1080p)
    away = np.ones(photo.shape[:2], bool)
    away[rows, cols] = False
    assert away.mean() > 0.6
    for frame, plain_frame in zip(frames, before):
        frame = frame.astype(int)
        assert np.abs(frame[away] - photo[away]).mean() < 2.5  # the photo, up to H.264
        assert np.abs(frame[away] - plain_frame[away]).mean() < 1.0
        inner = (slice(rows.start + 120, rows.stop - 120), slice(cols.start + 120, cols.stop - 120))
        assert np.abs(frame[inner] - plain_frame[inner]).mean() > 10  # the restored face differs


@pytest.fixture(scope="module")
def grid_job(pipeline, speech, gfpgan_checkpoint):
    """One frame in grid mode, half the restored face blended in."""
    return pipeline(IDENTITY, speech["one"], out=None, mode="grid", aligned=True, enhance="gfpgan",
                    enhance_weight=0.5, enhance_checkpoint=gfpgan_checkpoint, return_frames=True, progress=False)


def unrestored(face: np.ndarray) -> np.ndarray:
    """The 512 face the restorer sees for a generated face of the aligned kit identity: composed into the
    224 'photo', then warped out through S."""
    crop = read_image(IDENTITY)
    composed = Paster(crop, crop_to_generated(np.eye(2, 3)))(face)
    return warp_to_ffhq(composed, photo_to_ffhq(np.eye(2, 3)))


def test_grid_shows_before_and_after_and_the_weight_blends(pipeline, grid_job, gfpgan_checkpoint):
    assert grid_job.frames.shape == (1, 24 + SIZE, 2 * SIZE, 3) and grid_job.faces.shape == (1, 224, 224, 3)
    before = np.stack([unrestored(face) for face in grid_job.faces])
    assert np.array_equal(grid_job.frames[:, 24:, :SIZE], before)
    restored = pipeline._restorer[1](before)  # the restorer the job loaded
    half = np.rint(before[0] + 0.5 * (restored[0].astype(np.float32) - before[0]))
    assert np.abs(grid_job.frames[0, 24:, SIZE:].astype(int) - half).max() <= 1
    assert np.abs(restored[0].astype(int) - before[0]).mean() > 10


def test_crop_mode_gives_512_faces_and_weight_zero_changes_nothing(pipeline, speech, grid_job, gfpgan_checkpoint):
    job = dict(out=None, aligned=True, return_frames=True, progress=False)
    crop = pipeline(IDENTITY, speech["one"], mode="crop", enhance="gfpgan", enhance_weight=0.0,
                    enhance_checkpoint=gfpgan_checkpoint, **job)
    assert crop.frames.shape == (1, SIZE, SIZE, 3)
    assert np.array_equal(crop.frames, grid_job.frames[:, 24:, :SIZE])  # weight 0: the unrestored face
    full = pipeline(IDENTITY, speech["one"], mode="full", enhance="gfpgan", enhance_weight=0.0,
                    enhance_checkpoint=gfpgan_checkpoint, **job)
    assert np.array_equal(full.frames, pipeline(IDENTITY, speech["one"], mode="full", **job).frames)


def test_residual_smoothing_damps_flicker():
    before = np.full((4, 8, 8, 3), 100, np.uint8)
    after = np.stack([np.full((8, 8, 3), v, np.uint8) for v in (140, 60, 140, 60)])  # restored detail flips sign
    smoother = ResidualSmoother(0.5)
    shown = np.stack([smoother(b, a) for b, a in zip(before, after)]).astype(int)
    assert shown[0, 0, 0, 0] == 140  # the first frame is as restored
    assert np.abs(np.diff(shown, axis=0)).max() < 0.6 * np.abs(np.diff(after.astype(int), axis=0)).min()


def test_enhance_options_from_text_and_their_limits():
    parsed = pcavs.Options.from_strings({"enhance": "gfpgan", "enhance_weight": "0.25", "enhance_smooth": " 0.5 "})
    assert parsed == pcavs.Options(enhance="gfpgan", enhance_weight=0.25, enhance_smooth=0.5)
    assert pcavs.Options().enhance is None and pcavs.Options().enhance_weight == 1.0
    for bad, message in (({"enhance": "codeformer"}, "enhance: 'codeformer' is not one of gfpgan"),
                         ({"enhance_weight": -0.1}, "enhance_weight: -0.1 must be a number from 0 to 1"),
                         ({"enhance_weight": True}, "enhance_weight: True must be a number"),
                         ({"enhance_smooth": 1}, "enhance_smooth: 1 would freeze"),
                         ({"enhance_checkpoint": 3}, "enhance_checkpoint: give the path")):
        with pytest.raises(pcavs.InputError, match=message):
            pcavs.Options(**bad)
    with pytest.raises(pcavs.InputError, match="enhance_weight: 'half' must be a number from 0 to 1"):
        pcavs.Options.from_strings({"enhance_weight": "half"})


def test_bad_enhance_options_fail_in_one_line(tmp_path, speech):
    out = tmp_path / "x.mp4"
    job = ("generate", "--face", str(IDENTITY), "--aligned", "--audio", str(speech["one"]), "--out", str(out))
    done = cli(*job, "--enhance", "codeformer")
    assert done.returncode == 2 and "invalid choice: 'codeformer'" in done.stderr
    for flags, message in (
        (("--enhance-weight", "1.5"), "pcavs: enhance_weight: 1.5 must be a number from 0 to 1"),
        (("--enhance-checkpoint", str(tmp_path / "none.pth")),
         f"pcavs: {tmp_path / 'none.pth'}: no such file or folder; run `pcavs download gfpgan`"),
    ):
        done = cli(*job, "--enhance", "gfpgan", *flags)
        assert done.returncode == 2 and not out.exists(), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith(message), done.stderr


# ---------------------------------------------------------------- downloads


@pytest.fixture(scope="module")
def server(gfpgan_checkpoint, tmp_path_factory):
    """Serves GFPGANv1.4.pth and a text file on 127.0.0.1; yields (base URL, requested paths)."""
    page = tmp_path_factory.mktemp("served") / "page.html"
    page.write_text("<html>quota exceeded</html>")
    files = {FILENAME: gfpgan_checkpoint, "page.html": page}
    with serve(files) as served:
        yield served


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def test_a_download_that_is_not_the_published_file_is_refused(server, gfpgan_checkpoint, capsys, monkeypatch):
    """A well-formed GFPGAN v1.4 checkpoint that is not the released file: refused, naming both hashes; nothing installed."""
    base, hits = server
    monkeypatch.delenv(GFPGAN.env, raising=False)
    assert main(["download", "gfpgan", "--url", f"{base}/{FILENAME}"]) == 2
    err = capsys.readouterr().err
    size = gfpgan_checkpoint.stat().st_size
    assert err.count("\n") == 1 and f"{base}/{FILENAME}: not the published {FILENAME}" in err
    assert size != GFPGAN.published.size  # so it is refused from the announced length, before the body
    assert f"offers {size:,} bytes, expected {GFPGAN.published.size:,} (SHA-256 {GFPGAN.published.sha256})" in err
    assert not GFPGAN.default_path().parent.exists() and hits[-1] == f"/{FILENAME}"


def test_a_copy_the_user_has_installs_with_no_verify_into_the_user_cache(server, gfpgan_checkpoint, capsys, monkeypatch):
    base, hits = server
    monkeypatch.delenv(GFPGAN.env, raising=False)
    assert main(["download", "gfpgan", "--from-file", str(gfpgan_checkpoint)]) == 2
    err = capsys.readouterr().err
    assert f"{gfpgan_checkpoint}: not the published {FILENAME}: SHA-256 {sha256(gfpgan_checkpoint)}" in err
    assert f"expected {GFPGAN.published.sha256}" in err and "--no-verify" in err
    assert not GFPGAN.default_path().parent.exists()
    assert main(["download", "gfpgan", "--from-file", str(gfpgan_checkpoint), "--no-verify"]) == 0
    out, err = capsys.readouterr()
    assert err.startswith(f"pcavs: warning: {gfpgan_checkpoint} is not the published {FILENAME}") and err.count("\n") == 1
    installed = GFPGAN.default_path()
    assert str(installed) in out and leftovers(installed.parent) == [FILENAME]  # no temporary file left beside it
    assert installed.read_bytes() == gfpgan_checkpoint.read_bytes() and find("gfpgan") == installed
    count = len(hits)
    assert main(["download", "gfpgan", "--url", f"{base}/{FILENAME}"]) == 0 and len(hits) == count  # nothing fetched again
    assert main(["download", "gfpgan", "--check"]) == 2  # installed, but not the published file
    assert f"{installed}: not the published {FILENAME}" in capsys.readouterr().err


def test_first_enhance_use_downloads_asking_nothing_and_verifies(server, monkeypatch):
    base, hits = server
    monkeypatch.delenv(GFPGAN.env, raising=False)
    monkeypatch.setitem(registry.MODELS, "gfpgan", replace(GFPGAN, url=f"{base}/{FILENAME}"))
    with pytest.raises(WeightsError, match=f"not the published {FILENAME}"):
        Restorer.from_pretrained(device="cpu")
    assert hits[-1] == f"/{FILENAME}" and not GFPGAN.default_path().parent.exists()


def test_download_refuses_a_wrong_file_and_leaves_nothing(server, tmp_path, capsys):
    base, _ = server
    dest = tmp_path / "models"
    assert main(["download", "gfpgan", "--url", f"{base}/page.html", "--dest", str(dest)]) == 2
    assert f"pcavs: {base}/page.html: not the published {FILENAME}: the server offers" in capsys.readouterr().err
    assert not dest.exists()
    wrong = tmp_path / "G.pth"
    import torch

    torch.save({"params_ema": {"conv.weight": torch.zeros(2)}}, wrong)
    assert main(["download", "gfpgan", "--from-file", str(wrong), "--dest", str(dest), "--no-verify"]) == 2
    assert f"pcavs: {wrong}: missing key" in capsys.readouterr().err and not dest.exists()


def test_missing_weights_offline_says_where_pcavs_looked(monkeypatch):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.delenv(GFPGAN.env, raising=False)
    monkeypatch.setitem(registry.MODELS, "gfpgan", replace(GFPGAN, url=f"http://127.0.0.1:{port}/{FILENAME}"))
    with pytest.raises(NetworkError) as error:
        enhance.ensure_checkpoint(progress=False)
    message = str(error.value)
    assert "\n" not in message and str(GFPGAN.default_path()) in message
    assert "pcavs download gfpgan --from-file GFPGANv1.4.pth" in message
    assert not GFPGAN.default_path().parent.exists()
    with pytest.raises(WeightsError, match="pcavs download gfpgan"):
        find("gfpgan")
