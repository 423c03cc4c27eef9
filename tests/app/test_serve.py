"""The web app through gradio_client, as a program calling it would: an app launched in the test on loopback
(synthesized weights), its `/generate` endpoint, bad input, the queue, and which files it serves."""
from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("gradio", reason='the web app needs Gradio: pip install "pcavs[serve]"')
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from pcavs.core.assets import DEMO_FACE  # noqa: E402
from pcavs.media.probe import probe  # noqa: E402
from pcavs.media.video import iter_frames  # noqa: E402
from support.av import counter_video, ffmpeg  # noqa: E402
from support.kits import INPUTS  # noqa: E402
from support.web import free_port, grey_photo, launched, short_speech  # noqa: E402

IDENTITY = INPUTS / "identity" / "000000.png"  # an aligned 224x224 face


@pytest.fixture(scope="module")
def server(synth_weights):
    with launched(synth_weights, queue=2, max_file_size="1mb", per_client=8) as served:
        yield served


@pytest.fixture(scope="module")
def client(server):
    return Client(server.url, verbose=False)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return tmp_path_factory.mktemp("media")


def test_generate_returns_a_playable_mp4_of_the_right_length(client, server, media):
    voice = short_speech(media, 0.3)
    out = client.predict(face=handle_file(DEMO_FACE), audio=handle_file(voice), mode="crop", api_name="/generate")
    info = probe(out)
    assert (info.video_codec, info.pix_fmt, info.audio_codec, info.fps) == ("h264", "yuv420p", "aac", 25.0)
    assert (info.width, info.height) == (224, 224)
    assert sum(1 for _ in iter_frames(out)) == math.ceil(0.3 * 25)
    # the job worked in a folder of its own, which holds its inputs and the mp4
    folders = server.workspace.folders()
    assert folders and any("talking_face.mp4" in [p.name for p in f.iterdir()] for f in folders)


def test_options_by_name_and_their_errors(client, media):
    voice = short_speech(media, 0.12, "tiny.wav")
    out = client.predict(face=handle_file(IDENTITY), audio=handle_file(voice), aligned=True, mode="grid",
                         pose=handle_file(IDENTITY), noise="random", seed=4, api_name="/generate")
    assert (probe(out).width, probe(out).height) == (672, 248)  # reference | generated | pose
    with pytest.raises(AppError, match=r"mode: 'sideways' is not one of full, crop, grid"):
        client.predict(face=handle_file(IDENTITY), audio=handle_file(voice), mode="sideways", api_name="/generate")


def bad_inputs(folder):
    """(what, face, audio, pose, the error's words) for each kind of bad input."""
    text = folder / "photo.jpg"
    text.write_text("this is not a picture")
    corrupt = folder / "voice.mp3"
    corrupt.write_bytes(bytes(range(256)) * 40)
    empty = folder / "empty.wav"
    empty.write_bytes(b"")
    faceless = counter_video(folder / "no face.mp4", 10, 25)
    voice = short_speech(folder, 0.12, "fine.wav")
    return [
        ("a non-image photo", text, voice, None, "not an image pcavs can read"),
        ("a photo with no face", grey_photo(folder), voice, None, "no face found"),
        ("corrupt audio", DEMO_FACE, corrupt, None, "not a readable audio or video file"),
        ("empty audio", DEMO_FACE, empty, None, "not a readable audio or video file"),
        ("a pose video without a face", DEMO_FACE, voice, faceless, "no face found in any frame"),
    ]


def test_each_bad_input_gets_its_one_line_error_and_the_server_keeps_serving(client, media):
    for what, face, audio, pose, words in bad_inputs(media):
        with pytest.raises(AppError) as raised:
            client.predict(face=handle_file(face), audio=handle_file(audio), pose=handle_file(pose) if pose else None,
                           mode="crop", api_name="/generate")
        message = str(raised.value)
        assert words in message and "\n" not in message.strip(), (what, message)
    out = client.predict(face=handle_file(IDENTITY), audio=handle_file(media / "fine.wav"), aligned=True, mode="crop",
                         api_name="/generate")
    assert sum(1 for _ in iter_frames(out)) == 3


def test_an_upload_over_the_size_limit_is_refused(client, server, media):
    big = media / "big.wav"
    ffmpeg("-f", "lavfi", "-i", "anoisesrc=d=40:r=16000", "-c:a", "pcm_s16le", str(big))  # 1.3 MB > 1 MB
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        client.predict(face=handle_file(IDENTITY), audio=handle_file(big), api_name="/generate")
    with open(big, "rb") as body:  # a client that does not check first: the server refuses the upload
        answer = httpx.post(server.url + "gradio_api/upload", files={"files": ("big.wav", body, "audio/wav")})
    assert answer.status_code == 413 and "maximum allowed size" in answer.text


def test_only_the_servers_own_files_and_the_demo_media_are_served(server, client, media):
    def status(path: str) -> int:
        return httpx.get(f"{server.url}gradio_api/file={path}").status_code

    assert status(DEMO_FACE) == 200
    for path in ("/etc/passwd", __file__, DEMO_FACE.parent / "face_landmark.tflite", f"{server.workspace.root}/../../etc/passwd"):
        assert status(path) == 403, path
    # a request cannot name a file on the server as its input (HTTP, not gradio_client, which would upload its own copy)
    parameters = httpx.get(f"{server.url}gradio_api/info").json()["named_endpoints"]["/generate"]["parameters"]
    for path in ("/etc/passwd", __file__):
        named = {"path": path, "meta": {"_type": "gradio.FileData"}}
        data = [named, named] + [p["parameter_default"] for p in parameters[2:]]
        call = httpx.post(f"{server.url}gradio_api/call/generate", json={"data": data})
        answer = httpx.get(f"{server.url}gradio_api/call/generate/{call.json()['event_id']}", timeout=60).text
        assert "event: error" in answer and ("was not uploaded by a user" in answer or "not a file this client uploaded" in answer), answer


def test_the_queue_has_a_maximum_and_tells_clients_their_place(client, server, media):
    """With the one pipeline busy, two jobs wait (the limit is 2), each knows its place, and one more is refused."""
    face, voice = grey_photo(media), short_speech(media, 0.12, "q.wav")
    with server.server.queue.place("someone else", "job", time.monotonic() + 120):  # the device is busy
        jobs = [client.submit(face=handle_file(face), audio=handle_file(voice), api_name="/generate") for _ in range(2)]
        wait_for(lambda: server.server.queue.counts() == (2, 1))
        ids = [job.id for job in list(server.server.videos._jobs.values()) if job.status == "queued"]
        places = sorted(httpx.get(f"{server.url}v1/videos/{i}").json()["position"] for i in ids)
        assert places == [0, 1]
        wait_for(lambda: all(j.status().progress_data for j in jobs))  # what gradio_client shows of the place
        told = sorted(j.status().progress_data[0].desc for j in jobs)
        assert told == ["waiting for the device: 0 ahead", "waiting for the device: 1 ahead"], told
        refused = client.submit(face=handle_file(face), audio=handle_file(voice), api_name="/generate")
        with pytest.raises(AppError, match="the queue is full"):
            refused.result(timeout=60)
    for job in jobs:  # released: each runs, and fails on its photo with no face
        with pytest.raises(AppError, match="no face found"):
            job.result(timeout=120)


def wait_for(condition, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.1)


def test_folders_removed_at_close_and_all_interfaces_warn(synth_weights, media):
    with pytest.warns(UserWarning, match="every network interface"):  # no login
        with launched(synth_weights, host="0.0.0.0") as served:
            root = served.workspace.root
            assert (root / "requests").is_dir()
    assert not root.exists()


def test_cli_serve_stops_on_sigterm_and_leaves_nothing(synth_weights, tmp_path):
    port = free_port()
    env_tmp = tmp_path / "tmp"
    env_tmp.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "pcavs", "serve", "--port", str(port), "--checkpoints",
                                str(synth_weights), "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**__import__("os").environ, "TMPDIR": str(env_tmp)})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("pcavs serve: http://127.0.0.1" in line for line in lines) or process.poll() is not None, 180)
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200
        assert list(env_tmp.glob("pcavs-serve-*"))
    finally:
        process.terminate()
        process.wait(60)
    assert not list(env_tmp.glob("pcavs-serve-*")), "the server's folder outlived it"


def test_the_colab_cell_installs_the_app_and_starts_it_with_a_public_link(monkeypatch):
    import nbformat
    from packaging.requirements import Requirement

    import pcavs

    notebook = nbformat.read(Path(__file__).resolve().parents[2] / "PCAVS_Colab.ipynb", as_version=4)
    (cell,) = [c for c in notebook.cells if c.get("id") == "web-app"]
    assert "START_WEB_APP = False" in cell.source, "optional: off until the box is ticked"
    commands, started = [], []
    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: commands.append(command))
    monkeypatch.setattr(pcavs, "serve", lambda **kwargs: started.append(kwargs))
    names = {"PCAVS_PIP": "pcavs[notebook] @ git+https://github.com/pcavs/pcavs", "CHECKPOINTS": "weights",
             "pcavs": pcavs, "subprocess": subprocess, "sys": sys}
    exec(cell.source.replace("START_WEB_APP = False", "START_WEB_APP = True"), names)
    (command,) = commands
    wanted = Requirement(command[-1])
    assert (wanted.name, wanted.extras, wanted.url) == ("pcavs", {"notebook", "serve"}, "git+https://github.com/pcavs/pcavs")
    assert started == [{"share": True, "checkpoints": "weights"}]
