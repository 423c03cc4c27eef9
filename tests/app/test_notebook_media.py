"""The notebook's media: uploads (Jupyter's FileUpload in ipywidgets 7 and 8 shapes, Colab's files.upload),
recordings (Colab's eval_js and the browser JavaScript), the demo fallback, the option dropdowns, the one
folder of upload copies, and the player that keeps the notebook small (embedded once, or played from disk).

Colab is a stand-in `google.colab` put in sys.modules: `files.upload()` returns {name: bytes} like the
real one, `output.eval_js(script)` returns what a browser would (a data URL) or raises its error.
"""
from __future__ import annotations

import base64
import datetime
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types
import urllib.error
import urllib.request
from dataclasses import fields
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile

from support.media import tone
from pcavs.app import notebook
from pcavs.media.audio import SPEECH_RATE as SAMPLE_RATE, load_speech
from pcavs.core.assets import DEMO_AUDIO, DEMO_FACE, DEMO_POSE
from pcavs.core.errors import InputError
from pcavs.media.ffmpeg import ffmpeg_exe
from pcavs.media.images import read_image
from pcavs.core.options import Options

NODE = shutil.which("node")
WAV_SECONDS = 110  # 16-bit mono at 48 kHz: 10.6 MB


# ---------------------------------------------------------------- media made at test time

@pytest.fixture(scope="session")
def big_photo() -> bytes:
    """The demo face, 5x upscaled with strong noise: a 5.4 MB JPEG of 2560x2560 that still shows a face."""
    from PIL import Image

    with Image.open(DEMO_FACE) as image:
        face = image.convert("RGB")
        big = np.asarray(face.resize((face.width * 5, face.height * 5), Image.BICUBIC)).astype(np.int16)
    noise = np.random.default_rng(0).integers(-32, 33, big.shape, dtype=np.int16)
    out = io.BytesIO()
    Image.fromarray(np.clip(big + noise, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=97)
    data = out.getvalue()
    assert len(data) >= 5_000_000
    return data


@pytest.fixture(scope="session")
def big_wav() -> bytes:
    out = io.BytesIO()
    soundfile.write(out, tone(WAV_SECONDS, 48000), 48000, format="WAV", subtype="PCM_16")
    data = out.getvalue()
    assert len(data) >= 10_000_000
    return data


@pytest.fixture(scope="session")
def opus_webm(tmp_path_factory) -> bytes:
    """What Chrome's MediaRecorder gives: 2 s of speech-like tone as webm/opus, made with our ffmpeg."""
    path = tmp_path_factory.mktemp("recorded") / "voice.webm"
    command = [ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "f32le", "-ar", "48000", "-ac", "1", "-i", "pipe:0",
               "-c:a", "libopus", "-b:a", "48k", "-f", "webm", str(path)]
    subprocess.run(command, input=tone(2.0, 48000).tobytes(), check=True)
    return path.read_bytes()


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


@pytest.fixture(autouse=True)
def _temp_in_tmp_path(monkeypatch, tmp_path):
    """The copies of uploads and recordings go under the test's own folder."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


# ---------------------------------------------------------------- how the browser fills a FileUpload

def browser_sets(widget, files: list[tuple[str, str, bytes]], announced: int | None = None) -> None:
    """Update a real ipywidgets 8 FileUpload as the front end does: its JSON state plus binary buffers."""
    stamp = int(datetime.datetime(2025, 1, 1).timestamp() * 1000)
    widget.set_state({"value": [
        {"name": name, "type": kind, "size": len(data) if announced is None else announced,
         "last_modified": stamp, "content": memoryview(data)}
        for name, kind, data in files
    ]})


def ipywidgets7_value(files: list[tuple[str, str, bytes]], announced: int | None = None) -> dict:
    """The value of an ipywidgets 7 FileUpload (Colab's): name -> {"metadata": ..., "content": bytes}."""
    return {name: {"metadata": {"name": name, "type": kind, "size": len(data) if announced is None else announced,
                                "lastModified": 1735689600000}, "content": data}
            for name, kind, data in files}


@pytest.fixture(params=["ipywidgets8", "ipywidgets7"])
def upload(request):
    """fill(picker, role, files) puts `files` in the picker's upload for `role`, in one widget version's shape."""
    def fill(picker, role, files, announced=None):
        if request.param == "ipywidgets8":
            browser_sets(picker.widgets[role], files, announced)
        else:
            picker.widgets[role] = types.SimpleNamespace(value=ipywidgets7_value(files, announced))
    return fill


# ---------------------------------------------------------------- a stand-in Colab

class Colab:
    """google.colab's files.upload and output.eval_js, answering from queues the test fills."""

    def __init__(self):
        self.uploads: list[dict[str, bytes]] = []
        self.answers: list[object] = []
        self.scripts: list[str] = []
        self.upload_calls = 0

    def upload(self) -> dict[str, bytes]:
        self.upload_calls += 1
        received = self.uploads.pop(0)
        for name, data in received.items():  # the real one also saves each file in the working folder
            Path(name).write_bytes(data)
        return received

    def eval_js(self, script: str, ignore_result: bool = False, timeout_sec=None):
        self.scripts.append(script)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer(script) if callable(answer) else answer


@pytest.fixture
def colab(monkeypatch, tmp_path):
    stand_in = Colab()
    package = types.ModuleType("google.colab")
    package.files = types.ModuleType("google.colab.files")
    package.files.upload = stand_in.upload
    package.output = types.ModuleType("google.colab.output")
    package.output.eval_js = stand_in.eval_js
    if "google" not in sys.modules:
        monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setattr(sys.modules["google"], "colab", package, raising=False)
    monkeypatch.setitem(sys.modules, "google.colab", package)
    monkeypatch.setitem(sys.modules, "google.colab.files", package.files)
    monkeypatch.setitem(sys.modules, "google.colab.output", package.output)
    monkeypatch.chdir(tmp_path)
    assert notebook.in_colab()
    return stand_in


class MessageError(Exception):
    """What google.colab's eval_js raises when the browser's promise rejects."""


# ---------------------------------------------------------------- Jupyter: FileUpload widgets

def test_large_uploads_through_the_widget(upload, big_photo, big_wav, capsys):
    picker = notebook.MediaPicker(face="upload", audio="upload", pose="none")
    upload(picker, "face", [("me.jpg", "image/jpeg", big_photo)])
    upload(picker, "audio", [("hello.wav", "audio/wav", big_wav)])
    job = picker.files()
    assert capsys.readouterr().out.splitlines() == [
        "face: me.jpg (uploaded)", "audio: hello.wav (uploaded)", "pose: none (the photo's own pose)"]
    assert job["pose"] is None
    assert job["face"].name == "me.jpg" and job["face"].read_bytes() == big_photo
    assert job["audio"].name == "hello.wav" and job["audio"].read_bytes() == big_wav
    assert read_image(job["face"]).shape == (2560, 2560, 3)
    assert len(load_speech(job["audio"])) == WAV_SECONDS * SAMPLE_RATE
    assert picker.files() == job  # the same upload is read once


def test_the_large_uploaded_photo_shows_a_face(big_photo, tmp_path):
    from pcavs.faces.detect import LiteRTDetector

    picker = notebook.MediaPicker(face="upload", audio="demo", pose="demo")
    browser_sets(picker.widgets["face"], [("me.jpg", "image/jpeg", big_photo)])
    assert len(LiteRTDetector().detect(read_image(picker.files()["face"]))) == 1


def test_nothing_uploaded_means_the_demo_and_says_so(capsys):
    picker = notebook.MediaPicker(face="upload", audio="upload", pose="upload")
    assert picker.files() == {"face": DEMO_FACE, "audio": DEMO_AUDIO, "pose": DEMO_POSE}
    assert capsys.readouterr().out.splitlines() == [
        "face: demo_face.jpg (demo)", "audio: demo_speech.wav (demo)", "pose: demo_pose.mp4 (demo)"]


@pytest.mark.parametrize("role, name, data, words", [
    ("face", "me.jpg", b"", ["me.jpg", "empty (0 bytes)"]),
    ("face", "me.jpg", b"\xff\xd8 not really a jpeg", ["me.jpg", "not an image pcavs can read"]),
    ("audio", "hello.wav", b"", ["hello.wav", "empty (0 bytes)"]),
    ("audio", "hello.wav", b"RIFF\x00\x00 this is no wave", ["hello.wav"]),
    ("pose", "nod.mp4", b"\x00\x00\x00\x18ftypmp42 and then garbage", ["nod.mp4"]),
])
def test_a_bad_upload_is_an_error_naming_the_file(upload, role, name, data, words):
    picker = notebook.MediaPicker(**{**dict(face="demo", audio="demo", pose="demo"), role: "upload"})
    upload(picker, role, [(name, "application/octet-stream", data)])
    with pytest.raises(InputError) as caught:
        picker.files()
    message = str(caught.value)
    assert all(word in message for word in words), message
    assert "\n" not in message and "pcavs-uploads-" not in message  # one line, the user's name, not our temp path


def test_an_incomplete_upload_is_an_error(upload, big_photo):
    picker = notebook.MediaPicker(face="upload", audio="demo", pose="demo")
    upload(picker, "face", [("me.jpg", "image/jpeg", big_photo[:1000])], announced=len(big_photo))
    with pytest.raises(InputError, match=rf"me.jpg: the upload is incomplete \(1000 of {len(big_photo)} bytes"):
        picker.files()


def test_two_files_for_one_input_is_an_error(upload):
    picker = notebook.MediaPicker(face="upload", audio="demo", pose="demo")
    photo = DEMO_FACE.read_bytes()
    upload(picker, "face", [("a.jpg", "image/jpeg", photo), ("b.jpg", "image/jpeg", photo)])
    with pytest.raises(InputError, match=r"face: 2 files uploaded \(a.jpg, b.jpg\); upload one face photo"):
        picker.files()


def test_an_uploaded_pose_image_is_a_fixed_pose(upload, capsys):
    picker = notebook.MediaPicker(face="demo", audio="demo", pose="upload")
    upload(picker, "pose", [("still.jpg", "image/jpeg", DEMO_FACE.read_bytes())])
    assert picker.files()["pose"].name == "still.jpg"
    assert "pose: still.jpg (uploaded)" in capsys.readouterr().out


@pytest.mark.parametrize("value, expected", [
    ((), []),
    ({}, []),
    (({"name": "a.jpg", "type": "image/jpeg", "size": 3, "content": memoryview(b"abc")},), [("a.jpg", b"abc", 3)]),
    ({"a.jpg": {"metadata": {"name": "a.jpg", "size": 3}, "content": b"abc"}}, [("a.jpg", b"abc", 3)]),
])
def test_both_fileupload_value_shapes(value, expected):
    assert notebook.uploaded(value) == expected


def test_unsafe_upload_names_stay_in_their_folder():
    medium = notebook.keep("face", "../../evil/../me.jpg", DEMO_FACE.read_bytes())
    assert medium.name == "me.jpg" and medium.path.parent == notebook.upload_folder() / "face"
    assert notebook.upload_folder().name.startswith("pcavs-uploads-")


def test_an_unknown_source_is_refused():
    with pytest.raises(InputError, match="pose: 'record' is not one of upload, demo, none"):
        notebook.MediaPicker(pose="record")


def test_recording_outside_colab_says_it_needs_colab():
    with pytest.raises(InputError, match="audio: recording with the microphone needs Colab"):
        notebook.MediaPicker(audio="record")


# ---------------------------------------------------------------- Colab: files.upload

def test_colab_uploads_with_one_picker_per_input(colab, big_photo, big_wav, capsys):
    colab.uploads = [{"me.jpg": big_photo}, {"hello.wav": big_wav}]
    picker = notebook.MediaPicker(face="upload", audio="upload", pose="demo")
    assert colab.upload_calls == 2 and not picker.widgets
    job = picker.files()
    assert job["face"].read_bytes() == big_photo and job["audio"].read_bytes() == big_wav
    assert job["pose"] == DEMO_POSE
    out = capsys.readouterr().out.splitlines()
    assert out[-3:] == ["face: me.jpg (uploaded)", "audio: hello.wav (uploaded)", "pose: demo_pose.mp4 (demo)"]
    assert "face: choose the face photo, or press Cancel upload to use the demo file" in out


def test_colab_cancelled_upload_means_the_demo(colab, capsys):
    colab.uploads = [{}, {}]
    picker = notebook.MediaPicker(face="upload", audio="upload", pose="none")
    assert picker.files() == {"face": DEMO_FACE, "audio": DEMO_AUDIO, "pose": None}
    assert "audio: demo_speech.wav (demo)" in capsys.readouterr().out


@pytest.mark.parametrize("received, words", [
    ({"me.jpg": b""}, ["me.jpg: the uploaded face photo is empty (0 bytes)"]),
    ({"me.jpg": b"GIF89a broken"}, ["me.jpg:"]),
    ({"a.jpg": b"1", "b.jpg": b"2"}, ["face: 2 files uploaded"]),
])
def test_colab_bad_upload_is_an_error(colab, received, words):
    colab.uploads = [received]
    with pytest.raises(InputError) as caught:
        notebook.MediaPicker(face="upload", audio="demo", pose="demo")
    assert all(word in str(caught.value) for word in words), str(caught.value)


# ---------------------------------------------------------------- recordings: data URLs through eval_js

@pytest.mark.parametrize("url, mime, data", [
    ("data:audio/webm;codecs=opus;base64,R0lG", "audio/webm", b"GIF"),
    ("data:image/jpeg;base64,R0lG", "image/jpeg", b"GIF"),
    ("data:audio/ogg; codecs=opus;base64,", "audio/ogg", b""),
    ("data:;base64,R0lG", "application/octet-stream", b"GIF"),
])
def test_data_urls_are_parsed(url, mime, data):
    assert notebook.parse_data_url(url, "audio") == (mime, data)


@pytest.mark.parametrize("url", [None, "", "hello", "data:audio/webm,R0lG", "data:audio/webm;base64,R0l$G", "data:audio/webm;base64,R0l"])
def test_bad_data_urls_are_errors(url):
    with pytest.raises(InputError, match="^audio: "):
        notebook.parse_data_url(url, "audio")


def test_a_recorded_voice_is_read_like_a_file(colab, opus_webm, capsys):
    colab.answers = [data_url("audio/webm;codecs=opus", opus_webm)]
    picker = notebook.MediaPicker(face="demo", audio="record", pose="demo")
    assert colab.scripts == [notebook.RECORD_VOICE_JS]
    path = picker.files()["audio"]
    assert path.name == "recording.webm" and path.read_bytes() == opus_webm
    assert abs(len(load_speech(path)) / SAMPLE_RATE - 2.0) < 0.1
    assert "audio: recording.webm (recorded)" in capsys.readouterr().out


def test_a_webcam_photo_is_read_like_a_file(colab, capsys):
    colab.answers = [data_url("image/jpeg", DEMO_FACE.read_bytes())]
    picker = notebook.MediaPicker(face="record", audio="demo", pose="demo")
    assert colab.scripts == [notebook.TAKE_PHOTO_JS]
    path = picker.files()["face"]
    assert path.name == "webcam.jpg"
    assert np.array_equal(read_image(path), read_image(DEMO_FACE))
    assert "face: webcam.jpg (recorded)" in capsys.readouterr().out


@pytest.mark.parametrize("answer, words", [
    (MessageError("NotAllowedError: Permission denied"), ["audio: the browser recorded nothing (NotAllowedError", "microphone"]),
    ("data:audio/webm;base64,", ["recording.webm: the recorded voice recording is empty (0 bytes); record it again"]),
    ("data:audio/webm;base64," + base64.b64encode(b"not opus at all").decode(), ["recording.webm:"]),
])
def test_a_failed_recording_is_an_error(colab, answer, words):
    colab.answers = [answer]
    with pytest.raises(InputError) as caught:
        notebook.MediaPicker(face="demo", audio="record", pose="demo")
    assert all(word in str(caught.value) for word in words), str(caught.value)


# ---------------------------------------------------------------- the browser side

@pytest.mark.parametrize("script, calls", [
    (notebook.RECORD_VOICE_JS, ["getUserMedia({audio: true})", "new MediaRecorder(", "readAsDataURL("]),
    (notebook.TAKE_PHOTO_JS, ["getUserMedia({video: true})", "toDataURL('image/jpeg'"]),
])
def test_the_javascript_asks_the_browser_for_a_data_url(script, calls, tmp_path):
    assert all(call in script for call in calls)
    if NODE is None:
        pytest.skip("node is not installed: the JavaScript syntax is not checked")
    source = tmp_path / "record.js"
    source.write_text(script)
    checked = subprocess.run([NODE, "--check", str(source)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


# A browser reduced to what the recording scripts touch: buttons are clicked as soon as they listen,
# the microphone gives the bytes of RECORDED, the webcam a fixed jpeg data URL.
FAKE_BROWSER = """
const fs = require('fs');
const recorded = fs.readFileSync(process.env.RECORDED);
const log = {stopped: 0, removed: 0, labels: []};
function element(tag) {
  const node = {tag, style: {}, textContent: '', children: [], videoWidth: 640, videoHeight: 480,
    append(...kids) { this.children.push(...kids); }, remove() { log.removed += 1; },
    async play() {}, getContext() { return {drawImage() {}}; },
    toDataURL(type) { return 'data:' + type + ';base64,' + Buffer.from('jpeg bytes').toString('base64'); }};
  Object.defineProperty(node, 'onclick', {set(handler) { log.labels.push(node.textContent); setTimeout(handler, 0); }});
  return node;
}
globalThis.window = globalThis;
globalThis.document = {createElement: element, body: element('body'), documentElement: {scrollHeight: 100}};
const stream = {getTracks: () => [{stop() { log.stopped += 1; }}]};
Object.defineProperty(globalThis, 'navigator', {value: {mediaDevices: {getUserMedia: async () => stream}}, configurable: true});
globalThis.MediaRecorder = class {
  constructor() { this.mimeType = 'audio/webm;codecs=opus'; }
  start() {}
  stop() { this.ondataavailable({data: new Blob([recorded])}); this.onstop(); }
};
globalThis.FileReader = class {
  readAsDataURL(blob) {
    blob.arrayBuffer().then((bytes) => {
      this.result = 'data:' + blob.type + ';base64,' + Buffer.from(bytes).toString('base64');
      this.onload();
    });
  }
};
eval(fs.readFileSync(process.env.SCRIPT, 'utf8')).then((url) => console.log(JSON.stringify({url, ...log})));
"""


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_the_voice_script_returns_what_the_recorder_gave(tmp_path, opus_webm):
    (tmp_path / "voice.webm").write_bytes(opus_webm)
    (tmp_path / "record.js").write_text(notebook.RECORD_VOICE_JS)
    (tmp_path / "browser.js").write_text(FAKE_BROWSER)
    env = {"RECORDED": str(tmp_path / "voice.webm"), "SCRIPT": str(tmp_path / "record.js"), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([NODE, str(tmp_path / "browser.js")], capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["labels"] == ["Start recording", "Stop recording"]
    assert report["stopped"] == 1 and report["removed"] == 1  # the microphone is released, the buttons go
    mime, data = notebook.parse_data_url(report["url"], "audio")
    assert mime == "audio/webm" and data == opus_webm
    path = notebook.keep("audio", "recording" + notebook.suffix_for(mime), data, "recorded").path
    assert abs(len(load_speech(path)) / SAMPLE_RATE - 2.0) < 0.1


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_the_photo_script_returns_a_jpeg_data_url(tmp_path):
    (tmp_path / "photo.js").write_text(notebook.TAKE_PHOTO_JS)
    (tmp_path / "browser.js").write_text(FAKE_BROWSER)
    env = {"RECORDED": str(tmp_path / "photo.js"), "SCRIPT": str(tmp_path / "photo.js"), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([NODE, str(tmp_path / "browser.js")], capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["labels"] == ["Take photo"] and report["stopped"] == 1 and report["removed"] == 1
    assert notebook.parse_data_url(report["url"], "face") == ("image/jpeg", b"jpeg bytes")


# ---------------------------------------------------------------- options

def test_the_dropdowns_come_from_options():
    form = notebook.OptionsForm()
    specs = {spec.name: spec for spec in fields(Options)}
    assert list(form.widgets) == list(notebook.SHOWN_OPTIONS)
    for name, widget in form.widgets.items():
        assert tuple(widget.options) == specs[name].metadata["choices"]
        assert widget.value == specs[name].default
    assert form.values() == {name: specs[name].default for name in notebook.SHOWN_OPTIONS}
    form.widgets["mode"].value = "grid"
    assert form.values()["mode"] == "grid"


def test_only_options_with_choices_get_a_dropdown():
    with pytest.raises(ValueError, match="'seed' is not an option with a set of choices"):
        notebook.OptionsForm(["seed"])


def test_download_outside_colab_says_where_the_video_is(tmp_path, capsys):
    notebook.download(tmp_path / "v.mp4")
    assert str(tmp_path / "v.mp4") in capsys.readouterr().out


# ---------------------------------------------------------------- upload copies


def test_upload_copies_live_in_one_folder_and_replace_each_other():
    face = DEMO_FACE.read_bytes()
    first = notebook.keep("face", "me.jpg", face)
    voice = notebook.keep("audio", "hello.wav", DEMO_AUDIO.read_bytes())
    again = notebook.keep("face", "me too.jpg", face)
    folder = notebook.upload_folder()
    assert first.path.parent.parent == voice.path.parent.parent == again.path.parent.parent == folder
    assert not first.path.exists() and again.path.read_bytes() == face  # a new upload replaces the input's copy
    assert [p.name for p in (folder / "face").iterdir()] == ["me too.jpg"]
    assert [p.name for p in (folder / "audio").iterdir()] == ["hello.wav"]


def test_the_upload_folder_is_removed_when_python_exits(tmp_path):
    script = ("import sys; from pathlib import Path; from pcavs.app import notebook; "
              "m = notebook.keep('face', 'me.jpg', Path(sys.argv[1]).read_bytes()); print(m.path)")
    done = subprocess.run([sys.executable, "-c", script, str(DEMO_FACE)], capture_output=True, text=True,
                          env={**os.environ, "TMPDIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    kept = Path(done.stdout.strip())
    assert kept.name == "me.jpg" and kept.is_relative_to(tmp_path) and not kept.parent.parent.exists()


# ---------------------------------------------------------------- the player


@pytest.fixture(scope="session")
def large_video(tmp_path_factory) -> Path:
    """A real mp4 over the inline limit (16 frames of noise, lossless), standing in for a 60 s 1080p result:
    above the limit the player's HTML does not depend on the video's size."""
    path = tmp_path_factory.mktemp("large") / "result.mp4"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "nullsrc=s=320x240:d=2:r=8,geq=random(1)*255:128:128", "-c:v", "libx264", "-qp", "0",
                    "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)], check=True)
    assert path.stat().st_size > notebook.INLINE_LIMIT
    return path


def player_html(path) -> str:
    return notebook.show_video(path)._repr_html_()


def test_a_frame_is_an_inline_jpeg_with_its_caption_escaped():
    frame = np.zeros((90, 600, 3), np.uint8)
    frame[:, 300:] = (250, 40, 40)
    page = notebook.picture(frame, "1.0 s <made>")._repr_html_()
    found = re.fullmatch(r'<img width="480" src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"><br><small>(.*)</small>', page)
    assert found and found[2] == "1.0 s &lt;made&gt;"
    shown = cv2.imdecode(np.frombuffer(base64.b64decode(found[1]), np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert shown.shape == frame.shape and np.abs(shown.astype(int) - frame).mean() < 3


def test_a_small_video_is_embedded_once_with_its_name_escaped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    video = tmp_path / 'talk <b>"&.mp4'
    shutil.copy(DEMO_POSE, video)
    page = player_html(video)
    assert page.count("base64,") == 1 and page.count("<video") == 1 and "<b>" not in page
    embedded = re.search(r'src="data:video/mp4;base64,([A-Za-z0-9+/=]+)"', page)[1]
    assert base64.b64decode(embedded) == video.read_bytes()
    link = re.search(r'<a download="([^"]*)" href="([^"]*)">Download ([^<]*)</a>', page)
    assert link[1] == link[3] == "talk &lt;b&gt;&quot;&amp;.mp4"  # the name, HTML-escaped
    assert link[2] == "talk%20%3Cb%3E%22%26.mp4"  # the file on disk, through the notebook server: no second copy


def test_the_largest_embedded_video_stays_under_2_mb_of_html(tmp_path):
    video = tmp_path / "edge.mp4"
    video.write_bytes(DEMO_POSE.read_bytes().ljust(notebook.INLINE_LIMIT, b"\0"))  # an mp4 with padding after its end
    page = player_html(video)
    assert page.count("base64,") == 1 and len(page.encode()) < 2_000_000


def test_a_large_video_plays_from_disk_in_jupyter(large_video, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "my results"
    folder.mkdir()
    shutil.copy(large_video, folder / "result.mp4")
    page = player_html(folder / "result.mp4")
    assert "base64" not in page and len(page.encode()) < 2_000_000
    assert re.search(r'<video width="480" controls src="my%20results/result.mp4"></video>', page)
    outside = player_html(large_video)  # not under the notebook's folder: the server cannot give it to the browser
    assert "<video" not in outside and "too large to embed" in outside and str(large_video) in outside


def test_a_large_video_plays_through_colabs_proxy(colab, large_video):
    """In Colab a large video is served from this kernel and reached through the address Colab proxies to its port."""
    colab.answers.append(lambda script: "http://127.0.0.1:{}/".format(re.search(r"proxyPort\((\d+)", script)[1]))
    page = player_html(large_video)
    assert "base64" not in page and len(page.encode()) < 2_000_000 and "<a download" not in page
    assert "google.colab.kernel.proxyPort(" in colab.scripts[-1]
    url = re.search(r'<video width="480" controls src="([^"]+)"></video>', page)[1]
    data = large_video.read_bytes()
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.headers["Content-Type"] == "video/mp4" and response.read() == data
    seek = urllib.request.Request(url, headers={"Range": "bytes=1000-1999"})  # what a player asks for when seeking
    with urllib.request.urlopen(seek, timeout=30) as response:
        assert response.status == 206 and response.read() == data[1000:2000]
        assert response.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
    with pytest.raises(urllib.error.HTTPError, match="404"):
        urllib.request.urlopen(url.rsplit("/", 2)[0] + "/guessed/result.mp4", timeout=30)
