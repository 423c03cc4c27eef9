"""`pcavs.evaluate` and `pcavs eval` with synthesized SyncNet weights: both crop routes, pcavs's own videos
(crop and full mode) and a video it did not make, the quality metrics, JSON, the plot, CSV runs and
`generate --eval`, and videos at other and variable frame rates (brought to 25 fps first, as run_pipeline.py does).
Clips are short (10-30 frames) but the kit's 160-frame video, which must score as the official code (and, in
the slow run, its 20 fps, 30 fps and variable-rate re-encodings as it does)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from support.kits import DATA
from support.av import ffmpeg
from pcavs import evaluate
from pcavs.faces.align import loader_view, prepare_face
from pcavs.app.cli import main
from pcavs.generation.compose import Composer
from pcavs.core.assets import DEMO_FACE
from pcavs.core.errors import InputError
from pcavs.metrics.evaluate import evaluate_faces
from pcavs.faces.sources import Identity
from pcavs.media.video import VideoWriter

KIT_VIDEO = DATA / "syncnet" / "sync.mp4"  # 224x224 face crop, 6.4 s: a video pcavs did not make
RATES = ("30", "20", "vfr")  # re-encodings of a 25 fps clip: 30 fps, 20 fps, and 30 fps then 20 fps (variable)


def at_rates(source, folder, seconds: float) -> dict:
    """`source` at 30 fps, 20 fps and a variable rate (30 fps for the first half, then 20 fps, with the frames' own
    times), each as long as the source: the picture on screen at each time is the source's."""
    half = seconds / 2
    filters = {"30": "fps=30", "20": "fps=20", "vfr": f"fps=30,select='lt(t\\,{half})+not(eq(mod(n\\,3)\\,2))'"}
    made = {}
    for rate, graph in filters.items():
        made[rate] = folder / f"rate {rate}.mp4"
        ffmpeg("-i", str(source), "-vf", graph, "-fps_mode", "vfr" if rate == "vfr" else "auto", "-c:v", "libx264",
               "-crf", "18", "-c:a", "copy", str(made[rate]))
    return made


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    """Test clips cut from the kit's video with the real ffmpeg."""
    folder = tmp_path_factory.mktemp("eval-media")
    made = {
        "clip": folder / "clip.mp4",  # 25 frames, 224x224: the crop route
        "wide": folder / "wide clip.mp4",  # the same face smaller inside a 480x400 frame: the track route
        "speech": folder / "speech.wav",  # 0.4 s: 10 frames
        "silent": folder / "silent.mp4",  # no audio track
        "noface": folder / "noface.mp4",  # grey, with sound
        "grey224": folder / "grey224.mp4",  # grey 224x224 crops, with sound
    }
    ffmpeg("-i", str(KIT_VIDEO), "-t", "1", "-c:v", "libx264", "-crf", "18", "-c:a", "aac", str(made["clip"]))
    ffmpeg("-i", str(made["clip"]), "-vf", "scale=300:300,pad=480:400:120:40:gray", "-c:v", "libx264", "-crf", "18",
           "-c:a", "copy", str(made["wide"]))
    ffmpeg("-i", str(KIT_VIDEO), "-t", "0.4", "-vn", "-c:a", "pcm_s16le", str(made["speech"]))
    ffmpeg("-i", str(made["clip"]), "-an", "-c:v", "copy", str(made["silent"]))
    ffmpeg("-f", "lavfi", "-i", "color=gray:size=320x240:rate=25:duration=1", "-i", str(made["speech"]),
           "-c:v", "libx264", "-c:a", "aac", "-shortest", str(made["noface"]))
    ffmpeg("-f", "lavfi", "-i", "color=gray:size=224x224:rate=25:duration=1", "-i", str(made["speech"]),
           "-c:v", "libx264", "-c:a", "aac", "-shortest", str(made["grey224"]))
    return made


@pytest.fixture(scope="module")
def composite(media, tmp_path_factory) -> dict:
    """What full and crop mode would write if the generator gave back the photo's own face: a full-mode
    frame built by pcavs's Composer, and the 224x224 face itself, 12 frames each with the speech."""
    folder = tmp_path_factory.mktemp("composite")
    image, face = prepare_face(DEMO_FACE)
    composer = Composer("full", Identity(image=image, face=face))
    generated = loader_view(face.crop)
    paths = {"full": folder / "full.mp4", "crop": folder / "crop.mp4", "faces": np.stack([generated] * 12)}
    for mode, size in (("full", composer.size()), ("crop", (224, 224))):
        with VideoWriter(paths[mode], *size, audio=media["speech"]) as writer:
            for _ in range(12):
                writer.write(composer(generated, None) if mode == "full" else generated)
    return paths


def is_png(path) -> bool:
    image = cv2.imread(str(path))
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image is not None and image.shape[0] > 100 and image.std() > 0


def test_crop_route_scores_json_and_plot(media, syncnet_file, tmp_path):
    result = evaluate(media["clip"], syncnet=syncnet_file, device="cpu", progress=False)
    assert result.route == "crop" and result.num_frames == 25
    scores = result.sync
    assert scores.num_windows == 25 - 5 == result.confidence.size
    assert result.lse_d == pytest.approx(scores.mdist.min(), abs=1e-6)
    assert result.lse_c == pytest.approx(np.median(scores.mdist) - scores.mdist.min(), abs=1e-5) and result.lse_c > 0
    assert result.offset == scores.offsets[np.argmin(scores.mdist)] and -15 <= result.offset <= 15
    assert result.per_frame["cpbd"].shape == (25,) and 0 < result.cpbd < 1
    assert result.ssim is None and result.reference is None
    data = json.loads(json.dumps(result.to_dict()))
    assert data["route"] == "crop" and data["lse_d"] == pytest.approx(result.lse_d) and len(data["mean_distance"]) == 31
    assert data["offsets"][0] == 15 and len(data["confidence"]) == scores.num_windows
    figure = result.plot(tmp_path / "sync.png")
    assert is_png(tmp_path / "sync.png") and len(figure.axes) == 2
    assert figure._repr_png_()[:4] == b"\x89PNG"  # a notebook shows it as a picture, no pyplot needed
    assert [p.name for p in tmp_path.iterdir()] == ["sync.png"]


def test_track_route_on_a_wide_video_with_itself_as_reference(media, syncnet_file):
    result = evaluate(media["wide"], reference=media["wide"], syncnet=syncnet_file, device="cpu", progress=False)
    assert result.route == "track" and result.num_frames == 25
    assert result.frames_compared == 25 and result.ssim == pytest.approx(1.0) and result.lmd == 0.0
    assert result.psnr == float("inf") and result.to_dict()["psnr"] is None  # JSON has no infinity
    assert 0 < result.cpbd < 1 and np.isfinite(result.lse_d) and "track" in result.summary()


def test_full_mode_output_is_compared_in_the_frame_of_crop_mode(composite, syncnet_file):
    """A full-mode video is face-tracked; its aligned crops show the face as crop mode wrote it."""
    result = evaluate(composite["full"], reference=composite["crop"], syncnet=syncnet_file, device="cpu", progress=False)
    assert result.route == "track" and result.frames_compared == 12
    assert result.ssim > 0.85 and result.psnr > 27 and result.lmd < 1.5
    assert np.isfinite(result.per_frame["lmd"]).all()


def test_scoring_faces_in_memory(composite, media, syncnet_file):
    result = evaluate_faces(composite["faces"], media["speech"], syncnet=syncnet_file, device="cpu", progress=False)
    assert result.route == "crop" and result.num_frames == 12 and result.sync.num_windows == 10 - 5


@pytest.mark.slow
def test_pcavs_full_mode_without_a_visible_face_is_a_clear_error(pipeline, media, syncnet_file, tmp_path):
    """The synthesized PC-AVS weights paint no face: the full-mode video cannot be face-tracked."""
    out = tmp_path / "full.mp4"
    pipeline(DEMO_FACE, media["speech"], out=out, mode="full", progress=False)
    with pytest.raises(InputError, match=r"full.mp4: a face was found in only 0 of 10 frames"):
        evaluate(out, syncnet=syncnet_file, device="cpu", progress=False)


@pytest.mark.parametrize("case, message", [
    ("silent", "has no audio track; pass the speech with audio="),
    ("speech", "has no video stream"),
    ("noface", "a face was found in only 0 of 10 frames"),
])
def test_input_errors(media, syncnet_file, case, message):
    with pytest.raises(InputError, match=message) as exc:
        evaluate(media[case], syncnet=syncnet_file, device="cpu", progress=False)
    assert "\n" not in str(exc.value)


def test_a_reference_without_a_face_is_a_clear_error(media, syncnet_file):
    with pytest.raises(InputError, match=r"the mouth was found in only 0 of 10 frames of it and its reference"):
        evaluate(media["clip"], reference=media["grey224"], syncnet=syncnet_file, device="cpu", progress=False)


def test_separate_audio(media, syncnet_file):
    result = evaluate(media["silent"], audio=media["speech"], syncnet=syncnet_file, device="cpu", progress=False)
    assert result.sync.num_windows == 10 - 5 and result.audio == str(media["speech"])


# ---------------------------------------------------------------- frame rates


@pytest.fixture(scope="module")
def loaded(syncnet_file):
    from pcavs.metrics.syncnet import load_syncnet

    return load_syncnet(syncnet_file)


@pytest.fixture(scope="module")
def short_rates(tmp_path_factory) -> dict:
    """The first 1.2 s of the kit's video (30 frames at 25 fps) and its re-encodings at other rates."""
    folder = tmp_path_factory.mktemp("rates")
    cut = folder / "cut.mp4"
    ffmpeg("-i", str(KIT_VIDEO), "-t", "1.2", "-c:v", "libx264", "-crf", "18", "-c:a", "aac", str(cut))
    return {"25": cut, **at_rates(cut, folder, 1.2)}


def test_any_frame_rate_is_brought_to_25_fps_first(short_rates, loaded):
    """SyncNet pairs each frame with 40 ms of audio: 20 fps, 30 fps and variable-rate copies of a clip score its
    30 frames (not 24, 36 or 31), with the same windows and nearly its LSE-D and LSE-C."""
    results = {rate: evaluate(path, syncnet=loaded, device="cpu", progress=False) for rate, path in short_rates.items()}
    original = results.pop("25")
    assert (original.fps, original.resampled, original.num_frames) == (25, False, 30)
    assert "frame rate                        25 fps" in original.summary()
    for rate, result in results.items():
        assert result.resampled and result.num_frames == 30 and result.sync.num_windows == 25, rate
        assert result.offset == original.offset, rate
        assert result.lse_d == pytest.approx(original.lse_d, abs=0.02) and result.lse_c == pytest.approx(original.lse_c, abs=0.02), rate
        assert "brought to 25 fps as run_pipeline.py does" in result.summary() and result.to_dict()["resampled"] is True
    assert results["30"].fps == 30 and results["20"].fps == 20 and results["vfr"].fps not in (20, 25, 30)


@pytest.mark.slow
def test_the_kit_video_scores_alike_at_20_30_and_a_variable_frame_rate(tmp_path, loaded):
    """The 6.4 s kit video re-encoded: every copy scores 160 frames (154 windows) with the official numbers of the original."""
    with np.load(DATA / "syncnet" / "golden_compact.npz") as golden:
        lse_d, lse_c = float(golden["sync_minval"]), float(golden["sync_conf"])
        windows, offset = int(golden["sync_num_windows"]), int(golden["sync_offset"])
    for rate, path in at_rates(KIT_VIDEO, tmp_path, 6.4).items():
        result = evaluate(path, syncnet=loaded, device="cpu", progress=False)
        assert result.resampled and result.num_frames == 160 and result.sync.num_windows == windows, rate
        assert result.offset == offset and result.lse_d == pytest.approx(lse_d, abs=0.01), rate
        assert result.lse_c == pytest.approx(lse_c, abs=0.01), rate


# ---------------------------------------------------------------- the command


def test_cli_on_a_video_pcavs_did_not_make_gives_the_official_numbers(syncnet_file, tmp_path, capsys):
    """`pcavs eval sync.mp4 --json --plot`: the kit's LSE-D, LSE-C and offset (the official code, same weights)."""
    plot = tmp_path / "plot.png"
    code = main(["eval", str(KIT_VIDEO), "--json", "--plot", str(plot), "--syncnet", str(syncnet_file),
                 "--device", "cpu", "--quiet"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    with np.load(DATA / "syncnet" / "golden_compact.npz") as golden:
        assert data["lse_d"] == pytest.approx(float(golden["sync_minval"]), abs=1e-4)
        assert data["lse_c"] == pytest.approx(float(golden["sync_conf"]), abs=1e-4)
        assert data["offset"] == int(golden["sync_offset"]) and data["windows"] == int(golden["sync_num_windows"])
        assert np.abs(np.array(data["confidence_smoothed"]) - golden["sync_fconfm"]).max() <= 1e-4
    assert data["route"] == "crop" and is_png(plot)


def test_cli_table_with_the_weights_from_the_environment(media, syncnet_file, monkeypatch, capsys):
    monkeypatch.setenv("PCAVS_SYNCNET", str(syncnet_file))
    assert main(["eval", str(media["speech"]), "--quiet"]) == 2
    assert "has no video stream" in capsys.readouterr().err
    monkeypatch.setenv("PCAVS_SYNCNET", str(syncnet_file.parent / "absent.model"))
    assert main(["eval", str(KIT_VIDEO), "--quiet"]) == 2
    assert "pcavs download syncnet" in capsys.readouterr().err
    assert main(["eval", "--quiet"]) == 2
    assert "give one VIDEO, or --csv" in capsys.readouterr().err


def test_cli_csv_skips_bad_rows(media, syncnet_file, tmp_path, capsys):
    table = tmp_path / "videos.csv"
    table.write_text(
        "video,audio,reference\n"
        f"{media['clip']},,\n"
        "missing.mp4,,\n"
        f"{media['silent']},{media['speech']},{media['silent']}\n"
        f"{media['noface']},,\n"
    )
    code = main(["eval", "--csv", str(table), "--syncnet", str(syncnet_file), "--device", "cpu", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 2
    assert "row 3:" in err and "missing.mp4" in err and "row 5:" in err and "row 2:" not in err and "row 4:" not in err
    lines = out.strip().splitlines()
    assert lines[0].split()[:5] == ["video", "route", "LSE-D", "LSE-C", "offset"]
    assert lines[1].startswith("clip.mp4") and lines[2].startswith("silent.mp4") and lines[-1] == "2 of 4 videos scored"
    assert "1.000" in lines[2]  # SSIM of a video with itself


@pytest.mark.slow
def test_generate_with_eval(media, syncnet_file, tmp_path, capsys):
    out = tmp_path / "crop.mp4"
    code = main(["generate", "--face", str(DEMO_FACE), "--audio", str(media["speech"]), "--out", str(out),
                 "--mode", "crop", "--eval", "--syncnet", str(syncnet_file), "--device", "cpu", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0 and "LSE-D" in printed and "LSE-C" in printed and "crop (224x224" in printed
    again = evaluate(out, syncnet=syncnet_file, device="cpu", progress=False)  # pcavs's crop-mode video
    assert again.route == "crop" and again.sync.num_windows == 5 and 0 <= again.cpbd <= 1
