"""The README's bad-input catalogue, row by row, through both `pcavs.generate` and the `pcavs generate` command.

Each row builds real files, runs the real detector, decoder and networks (the synthesized
weights), and checks what the user sees: the video, or one line naming the file and what to
do (exit status 2 on the command line), with no output or temporary file left behind.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

import pcavs
from pcavs.app import cli
from pcavs.core.assets import DEMO_FACE, DEMO_POSE
from pcavs.media.probe import probe
from pcavs.media.images import read_image
from pcavs.media.video import iter_frames

from support.media import tone, write_video
from support.av import ffmpeg
from support.faces import place_face, placement

FRAMES = 1  # a working row makes a 1-frame video: what the row is about happens before the generator
POSE_FRAMES = 3  # but a pose row reads several pose frames, and a row that is split or stopped needs several frames


@dataclass
class Row:
    """One catalogue row: `build(tmp, weights)` gives generate()'s arguments; `error` is None when the row works."""

    build: Callable[[Path, Path], dict]
    error: str | None = None  # a regex the one-line message matches
    names: str | None = None  # the argument whose file the message must name
    patch: Callable | None = None  # monkeypatches that simulate the machine's side (disk, GPU, Ctrl-C)
    check: Callable | None = field(default=None)  # more checks on a working row's video
    frames: int | None = FRAMES  # frames a working row's video has (None: checked by `check`)


# ------------------------------------------------------------------ media made per row

def voice(tmp: Path, frames: int = FRAMES, name: str = "voice.wav") -> Path:
    path = tmp / name
    sf.write(path, tone(frames * 640 / 16000, 16000), 16000)
    return path


def photo_job(tmp: Path, image: Image.Image | np.ndarray, name: str, **save) -> dict:
    path = tmp / name
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(path, **save)
    return dict(face=path, audio=voice(tmp), mode="full")


def demo_photo() -> Image.Image:
    return Image.open(DEMO_FACE).convert("RGB")


def exif_rotated(tmp: Path, weights: Path) -> dict:
    turned = demo_photo().transpose(Image.Transpose.ROTATE_90)  # stored turned; orientation 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    return photo_job(tmp, turned, "phone photo.jpg", exif=exif.tobytes(), quality=92)


def sixteen_bit(tmp: Path, weights: Path) -> dict:
    path = tmp / "scan16.png"
    cv2.imwrite(str(path), np.asarray(demo_photo())[:, :, ::-1].astype(np.uint16) * 257)
    return dict(face=path, audio=voice(tmp), mode="full")


def huge(tmp: Path, weights: Path) -> dict:
    path = tmp / "huge.jpg"
    canvas = cv2.resize(np.asarray(demo_photo())[:, :, ::-1], (12000, 9000), interpolation=cv2.INTER_LINEAR)
    cv2.imwrite(str(path), canvas, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return dict(face=path, audio=voice(tmp), mode="full")


def face_frames(count: int, gap: set[int] = frozenset()) -> list[np.ndarray]:
    """A head that turns a little each frame; frames in `gap` show an empty room."""
    return [np.full((320, 320, 3), 90, np.uint8) if i in gap else place_face((320, 320), placement(1.0, 2.0 * i - 4, (45, 40)))
            for i in range(count)]


def pose_job(tmp: Path, pose: Path) -> dict:
    return dict(face=DEMO_FACE, audio=voice(tmp, POSE_FRAMES), pose=pose, mode="crop")


def vfr_pose(tmp: Path, weights: Path) -> dict:
    # frames 0-3 at 1/30 s apart, then 1/10 s apart: a phone that dropped its frame rate
    times = "if(lt(N,4),N/30,4/30+(N-4)/10)"
    path = write_video(tmp / "vfr.mp4", face_frames(8), 30, ("-vf", f"settb=1/600,setpts='({times})/TB'",
                       "-fps_mode", "passthrough", "-video_track_timescale", "600"))
    return pose_job(tmp, path)


def rotated_pose(tmp: Path, weights: Path) -> dict:
    stored = write_video(tmp / "stored.mp4", [np.rot90(f, 1) for f in face_frames(4)], 25)
    path = tmp / "phone.mp4"
    ffmpeg("-display_rotation:v", "-90", "-i", str(stored), "-c", "copy", str(path))
    return pose_job(tmp, path)


def checkpoint_folder(tmp: Path, weights: Path, skip: str = "", replace: dict | None = None) -> Path:
    """A copy of the synthesized checkpoint folder made of links, without `skip`, with files `replace`d."""
    folder = tmp / "my weights"
    folder.mkdir()
    for net in ("G", "V", "E", "A_sync"):
        name = f"latest_net_{net}.pth"
        if net == skip:
            continue
        if replace and net in replace:
            replace[net](weights / name, folder / name)
        else:
            (folder / name).symlink_to(weights / name)
    return folder


def truncated(source: Path, target: Path) -> None:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])


def other_model(source: Path, target: Path) -> None:
    torch.save({"backbone.conv1.weight": torch.zeros(8, 3, 3, 3), "head.fc.weight": torch.zeros(10, 8)}, target)


class Payload:  # what a malicious checkpoint would unpickle; weights_only=True must refuse it
    def __reduce__(self):
        return (print, ("this must never run",))


def unsafe_pickle(source: Path, target: Path) -> None:
    torch.save({"model": Payload()}, target)


def weights_job(tmp: Path, folder: Path) -> dict:
    return dict(face=DEMO_FACE, audio=voice(tmp), checkpoints=folder, mode="crop")


# ------------------------------------------------------------------ simulated machine failures

def no_model_work(monkeypatch, tmp: Path) -> None:
    """The row's error must come before any model work: loading the networks or running a job fails the test."""
    from pcavs.generation import pipeline

    for name in ("from_pretrained", "run"):
        monkeypatch.setattr(pipeline.Pipeline, name, lambda *a, **k: pytest.fail("model work before the output was checked"))


def disk_full(monkeypatch, tmp: Path) -> None:
    from pcavs.media import video

    original = video.VideoWriter.__enter__

    def dying_ffmpeg(self):  # as when the disk fills: ffmpeg dies mid-write
        writer = original(self)
        writer.proc.kill()
        writer.proc.wait()
        return writer

    monkeypatch.setattr(video.VideoWriter, "__enter__", dying_ffmpeg)


def ctrl_c(monkeypatch, tmp: Path) -> None:
    from pcavs.media import video

    original = video.VideoWriter.write
    written = []

    def write(self, frame):
        written.append(frame)
        if len(written) == 2:
            raise KeyboardInterrupt
        original(self, frame)

    monkeypatch.setattr(video.VideoWriter, "write", write)


def small_gpu(monkeypatch, tmp: Path, frames_that_fit: int = 1) -> None:
    from pcavs.models.generator import Generator

    original = Generator.forward

    def forward(self, spatial, style, noise=None):
        if len(style) > frames_that_fit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(self, spatial, style, noise)

    monkeypatch.setattr(Generator, "forward", forward)


def no_gpu_memory(monkeypatch, tmp: Path) -> None:
    small_gpu(monkeypatch, tmp, frames_that_fit=0)


def old_video(tmp: Path, frames: int = FRAMES) -> dict:
    (tmp / "out.mp4").write_bytes(b"the previous video")
    return dict(face=DEMO_FACE, audio=voice(tmp, frames), mode="crop")


def keeps_old_video(tmp: Path, weights: Path) -> dict:
    return old_video(tmp)


def keeps_old_video_mid_write(tmp: Path, weights: Path) -> dict:
    return old_video(tmp, POSE_FRAMES)  # stopped after its first frame is written


def faces(tmp: Path, canvas: np.ndarray, name: str, **extra) -> dict:
    return photo_job(tmp, canvas, name) | extra


def two_people(tmp: Path, weights: Path) -> dict:
    canvas = place_face(place_face((420, 680), placement(1.4, 4.0, (30, 40))), placement(0.9, -6.0, (420, 110)))
    return faces(tmp, canvas, "two people.png")


def check_size(width: int, height: int) -> Callable:
    def check(info, job) -> None:
        assert (info.width, info.height) == (width, height)

    return check


def check_photo_size(info, job) -> None:
    photo = read_image(job["face"])
    assert (info.height, info.width) == photo.shape[:2]


def check_replaced(info, job) -> None:
    assert info.video_codec == "h264"


ROWS: dict[str, Row] = {
    # face
    "face: no face": Row(lambda t, w: photo_job(t, np.full((300, 300, 3), 128, np.uint8), "wall.png"), "no face found", "face"),
    "face: several faces": Row(two_people, check=check_photo_size),
    "face: under 60 px": Row(lambda t, w: photo_job(t, demo_photo().resize((200, 200)), "tiny.jpg"), "too small", "face"),
    "face: cut off by the border": Row(lambda t, w: photo_job(t, demo_photo().crop((225, 0, 512, 512)), "cut.png"), "cut off", "face"),
    "face: grey": Row(lambda t, w: photo_job(t, demo_photo().convert("L"), "grey.png"), check=check_size(512, 512)),
    "face: RGBA": Row(lambda t, w: photo_job(t, demo_photo().convert("RGBA"), "rgba.png"), check=check_size(512, 512)),
    "face: 16-bit": Row(sixteen_bit, check=check_size(512, 512)),
    "face: CMYK": Row(lambda t, w: photo_job(t, demo_photo().convert("CMYK"), "print.jpg"), check=check_size(512, 512)),
    "face: EXIF-rotated": Row(exif_rotated, check=check_size(512, 512)),
    "face: empty file": Row(lambda t, w: dict(face=_bytes(t / "empty.jpg", b""), audio=voice(t)), "empty", "face"),
    "face: corrupt file": Row(lambda t, w: dict(face=_bytes(t / "half.jpg", DEMO_FACE.read_bytes()[:3000]), audio=voice(t)),
                              "truncated or corrupt", "face"),
    "face: not an image": Row(lambda t, w: dict(face=_bytes(t / "notes.png", b"hello"), audio=voice(t)), "not an image", "face"),
    "face: huge 12000x9000": Row(huge, check=check_size(3840, 2880)),
    # audio
    "audio: silence": Row(lambda t, w: dict(face=DEMO_FACE, audio=_write(t / "silence.wav", np.zeros(FRAMES * 640, np.float32)),
                                            mode="crop")),
    "audio: shorter than one frame": Row(lambda t, w: dict(face=DEMO_FACE, audio=_write(t / "click.wav", tone(0.02, 16000))),
                                         "too short", "audio"),
    "audio: corrupt mp3": Row(lambda t, w: dict(face=DEMO_FACE, audio=_bytes(t / "song.mp3", b"ID3" + bytes(500))),
                              "not a readable audio or video file", "audio"),
    "audio: truncated mp3": Row(lambda t, w: dict(face=DEMO_FACE, audio=_truncated_mp3(t), mode="crop"), frames=None,
                                check=lambda info, job: 1 <= len(list(iter_frames(job["out"]))) < 6),  # what is there
    "audio: video without sound": Row(lambda t, w: dict(face=DEMO_FACE, audio=write_video(t / "mute.mp4", face_frames(3), 25)),
                                      "no audio track", "audio"),
    "audio: unsupported file": Row(lambda t, w: dict(face=DEMO_FACE, audio=_bytes(t / "voice.docx", b"PK\x03\x04" + bytes(200))),
                                   "voice.docx", "audio"),
    "audio: empty file": Row(lambda t, w: dict(face=DEMO_FACE, audio=_bytes(t / "empty.m4a", b"")), "empty.m4a", "audio"),
    "audio: NaN and clipped samples": Row(lambda t, w: dict(face=DEMO_FACE, audio=_damaged(t), mode="crop")),
    # pose
    "pose: unreadable video": Row(lambda t, w: pose_job(t, _bytes(t / "broken.mp4", b"\x00\x00\x00\x18ftypmp42" + bytes(300))),
                                  "broken.mp4", "pose"),
    "pose: frames without a face": Row(lambda t, w: pose_job(t, write_video(t / "gaps.mp4", face_frames(6, gap={1, 2, 4}), 25)),
                                       frames=POSE_FRAMES),
    "pose: no face in any frame": Row(lambda t, w: pose_job(t, write_video(t / "room.mp4", face_frames(4, gap={0, 1, 2, 3}), 25)),
                                      "no face found in any frame", "pose"),
    "pose: one-frame video": Row(lambda t, w: pose_job(t, write_video(t / "one.mp4", face_frames(1), 25)), frames=POSE_FRAMES),
    "pose: variable frame rate": Row(vfr_pose, frames=POSE_FRAMES),
    "pose: rotated phone video": Row(rotated_pose, frames=POSE_FRAMES),
    # weights
    "weights: missing folder": Row(lambda t, w: weights_job(t, t / "nowhere"), "pcavs download", "checkpoints"),
    "weights: missing file": Row(lambda t, w: weights_job(t, checkpoint_folder(t, w, skip="E")), "latest_net_E.pth", "checkpoints"),
    "weights: truncated .pth": Row(lambda t, w: weights_job(t, checkpoint_folder(t, w, replace={"G": truncated})),
                                   "latest_net_G.pth", "checkpoints"),
    "weights: .pth of another model": Row(lambda t, w: weights_job(t, checkpoint_folder(t, w, replace={"V": other_model})),
                                          "latest_net_V.pth", "checkpoints"),
    "weights: unsafe pickle": Row(lambda t, w: weights_job(t, checkpoint_folder(t, w, replace={"A_sync": unsafe_pickle})),
                                  "latest_net_A_sync.pth: .*never loads them unsafely", "checkpoints"),
    # output
    "output: folder missing": Row(lambda t, w: dict(face=DEMO_FACE, audio=voice(t), out=t / "no such folder" / "out.mp4"),
                                  "does not exist", "out", patch=no_model_work),
    "output: a file where the folder should be": Row(lambda t, w: dict(face=DEMO_FACE, audio=voice(t),
                                                                       out=_bytes(t / "notes", b"x") / "out.mp4"),
                                                     r"does not exist \(a file has that name\)", "out", patch=no_model_work),
    "output: folder refuses new files (root too)": Row(lambda t, w: dict(face=DEMO_FACE, audio=voice(t), out=_proc_out()),
                                                       "folder /proc is not writable", "out", patch=no_model_work),
    "output: read-only folder": Row(lambda t, w: dict(face=DEMO_FACE, audio=voice(t), out=_read_only(t) / "out.mp4"),
                                    "not writable", "out", patch=no_model_work),
    "output: out already exists": Row(keeps_old_video, check=check_replaced),
    "output: disk full mid-write": Row(keeps_old_video, "writing the video failed", "out", patch=disk_full),
    "output: Ctrl-C mid-run": Row(keeps_old_video_mid_write, "interrupted", None, patch=ctrl_c),
    "output: spaces and non-ASCII": Row(lambda t, w: dict(face=_copy(DEMO_FACE, t / "фото лица.jpg"), audio=voice(t, name="голос 1.wav"),
                                                          pose=_copy(DEMO_POSE, t / "tête à tête.mp4"),
                                                          out=t / "vidéo finale.mp4", mode="crop")),
    # GPU
    "GPU: out of memory, then smaller batches": Row(lambda t, w: dict(face=DEMO_FACE, audio=voice(t, 2), mode="crop", batch_size=4),
                                                    patch=small_gpu, frames=2),
    "GPU: out of memory for one frame": Row(lambda t, w: dict(face=DEMO_FACE, audio=voice(t), mode="crop"),
                                            "out of memory even for one frame", None, patch=no_gpu_memory),
}


def _write(path: Path, samples: np.ndarray) -> Path:
    sf.write(path, samples, 16000, subtype="FLOAT")
    return path


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _copy(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes())
    return target


def _damaged(tmp: Path) -> Path:
    signal = tone(FRAMES * 640 / 16000, 16000) * 8  # clipped far beyond full scale
    signal[100:300] = np.nan
    return _write(tmp / "damaged.wav", signal)


def _proc_out() -> Path:
    """An output in /proc: a folder where no file can be created, whoever asks (os.access tells root it may write)."""
    if not os.path.isdir("/proc"):
        pytest.skip("needs Linux's /proc")
    return Path("/proc/pcavs.mp4")


def _read_only(tmp: Path) -> Path:
    if os.name != "posix" or os.geteuid() == 0:
        pytest.skip("root writes into a read-only folder (the /proc row covers root)")
    folder = tmp / "locked"
    folder.mkdir(mode=0o555)
    return folder


def _truncated_mp3(tmp: Path) -> Path:
    whole = tmp / "whole.mp3"
    ffmpeg("-i", str(voice(tmp, frames=6)), "-c:a", "libmp3lame", str(whole))
    data = whole.read_bytes()
    return _bytes(tmp / "cut.mp3", data[: len(data) // 2])


# ------------------------------------------------------------------ running a row both ways

def via_api(job: dict) -> tuple[int, str]:
    try:
        pcavs.generate(**job, progress=False)
    except pcavs.PcavsError as error:
        return 2, str(error)
    except KeyboardInterrupt:
        return 130, "interrupted"
    return 0, ""


def via_cli(job: dict, capsys) -> tuple[int, str]:
    argv = ["generate", "--quiet"]
    for key, value in job.items():
        for item in value if isinstance(value, list) else [value]:
            argv += [f"--{key.replace('_', '-')}", str(item)]
    capsys.readouterr()
    status = cli.main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) <= 1, lines
    message = lines[0] if lines else ""
    if status:
        assert message.startswith("pcavs: "), message
    return status, message


@pytest.mark.parametrize("interface", ["api", "cli"])
@pytest.mark.parametrize("name", ROWS)
def test_catalogue_row(name, interface, tmp_path, synth_weights, monkeypatch, capsys):
    row = ROWS[name]
    job = {"out": tmp_path / "out.mp4", **row.build(tmp_path, synth_weights)}
    old = job["out"].read_bytes() if job["out"].exists() else None
    if row.patch is not None:
        row.patch(monkeypatch, tmp_path)
    status, message = via_api(job) if interface == "api" else via_cli(job, capsys)
    print(f"{name} [{interface}]: exit {status}: {message}")
    leftovers = [p.name for p in Path(job["out"]).parent.glob("*.part")] if Path(job["out"]).parent.is_dir() else []
    assert not leftovers, leftovers
    if row.error is None:
        assert status == 0, message
        info = probe(job["out"])
        assert info.video_codec == "h264" and info.fps == 25.0
        if row.frames is not None:
            assert len(list(iter_frames(job["out"]))) == row.frames
        if row.check is not None:
            row.check(info, job)
        return
    assert status == (130 if row.error == "interrupted" else 2), message
    assert "\n" not in message and re.search(row.error, message), message
    if row.names is not None:
        named = job[row.names] if row.names != "out" else job["out"]
        assert Path(named).name in message or str(Path(named).parent) in message, message
    out = Path(job["out"])
    assert (out.read_bytes() if out.exists() else None) == old  # untouched: absent, or the previous video
