"""Hostile requests against the web app on loopback (issue 28): each gets its one-line error (or its HTTP status)
and the server goes on serving a normal request right after; no folder outlives a refused, cancelled or failed
job, and the server's memory stays bounded. Each answer and its time is printed (run with -s to see them)."""
from __future__ import annotations

import json
import os
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import soundfile as sf

pytest.importorskip("gradio", reason='the web app needs Gradio: pip install "pcavs[serve]"')

from pcavs.core.errors import InputError  # noqa: E402
from support import loopback  # noqa: E402
from support.av import ffmpeg  # noqa: E402
from support.web import (GOOD, IDENTITY, RATE, PeakMemory, good_job, launched, lying_wav, post, refused,  # noqa: E402
                         short_speech, wait_for)

MEMORY_BOUND = 1 << 30  # bytes the server may grow past its size after its first job, whatever it is sent


@dataclass
class Site:
    """The module's server, its memory, the media sent to it and the jobs it finished."""

    served: object
    media: Path
    voice: Path
    memory: PeakMemory
    after_first_job: int = 0
    done: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        return self.served.url


@pytest.fixture(scope="module")
def site(synth_weights, tmp_path_factory):
    media = tmp_path_factory.mktemp("hostile")
    with launched(synth_weights, max_seconds=5, job_timeout=60, per_client=2, allow_enhance=False,
                  max_file_size="1mb") as served:
        memory = PeakMemory()
        memory.start()
        here = Site(served, media, short_speech(media, 0.12), memory)  # 3 frames
        here.done.add(good_job(here.url, here.voice, media)["id"])
        here.after_first_job = psutil.Process().memory_info().rss
        yield here
        memory.stop()


def lying_mp3(path: Path, seconds: float) -> Path:
    """An mp3 of `seconds` of noise whose Xing/Info header counts 28 frames (0.9 s at 16 kHz)."""
    whole = path.with_name("whole.mp3")
    ffmpeg("-f", "lavfi", "-i", f"anoisesrc=d={seconds}:r={RATE}:a=0.3", "-c:a", "libmp3lame", "-b:a", "32k", str(whole))
    data = bytearray(whole.read_bytes())
    at = max(data.find(b"Xing"), data.find(b"Info"))
    assert at > 0 and struct.unpack(">I", data[at + 4:at + 8])[0] & 1, "no frame count in the mp3's header"
    struct.pack_into(">I", data, at + 8, 28)
    path.write_bytes(data)
    return path


def gradio_call(url: str, face: str, audio: str) -> tuple[str, str]:
    """/generate called over raw HTTP with two files named by path or URL: (the event, its data)."""
    parameters = httpx.get(f"{url}gradio_api/info").json()["named_endpoints"]["/generate"]["parameters"]
    named = [{"path": p, "meta": {"_type": "gradio.FileData"}} for p in (face, audio)]
    call = httpx.post(f"{url}gradio_api/call/generate", json={"data": named + [p["parameter_default"] for p in parameters[2:]]})
    lines = httpx.get(f"{url}gradio_api/call/generate/{call.json()['event_id']}", timeout=60).text.splitlines()
    event = next(line for line in lines if line.startswith("event: ")).removeprefix("event: ")
    data = json.loads(next(line for line in lines if line.startswith("data: ")).removeprefix("data: "))
    return event, data["error"] if isinstance(data, dict) and "error" in data else json.dumps(data)


def uploaded(url: str, path: Path) -> str:
    """`path` uploaded the way the page uploads it: its path on the server."""
    with open(path, "rb") as body:
        (where,) = httpx.post(f"{url}gradio_api/upload", files={"files": (path.name, body)}).json()
    return where


def test_a_voice_longer_than_the_limit_is_refused_by_its_own_name(site):
    long = site.media / "eight seconds.wav"
    ffmpeg("-f", "lavfi", "-i", f"anoisesrc=d=8:r={RATE}:a=0.3", "-c:a", "pcm_s16le", str(long))
    start = time.perf_counter()
    error = refused("an 8 s voice", post(site.url, long), 400, "eight seconds.wav", "at most 5 s", started=start)
    assert str(site.served.workspace.root) not in error and "upload-audio" not in error
    site.done.add(good_job(site.url, site.voice, site.media)["id"])


def test_a_voice_whose_header_lies_costs_no_more_than_the_limit(site):
    start = time.perf_counter()
    refused("an 8 s mp3 whose header says 0.9 s", post(site.url, lying_mp3(site.media / "liar.mp3", 8)), 400,
            "liar.mp3", "more than 5 s", "its header said less", started=start)
    # a wav whose sizes say 1 s: the decoder reads that second and no more of the 8 s behind it
    answer = post(site.url, lying_wav(site.media / "short liar.wav", 8, 1))
    assert answer.status_code == 202, answer.text
    job = site.served.server.videos.get(answer.json()["id"])
    assert sf.info(job.folder / "voice.wav").duration == pytest.approx(1.0, abs=0.01)
    assert httpx.delete(f"{site.url}v1/videos/{job.id}").status_code == 204
    site.done.add(good_job(site.url, site.voice, site.media)["id"])


@pytest.mark.parametrize("option, value, words", [("batch_size", "100000", "batch_size: 100000 is outside 1-16"),
                                                  ("enhance", "gfpgan", "enhance: this server does not restore")])
def test_options_past_the_servers_bounds_are_refused(site, option, value, words):
    start = time.perf_counter()
    refused(f"{option}={value}", post(site.url, site.voice, **{option: value}), 400, words, started=start)
    site.done.add(good_job(site.url, site.voice, site.media)["id"])


def test_a_url_in_place_of_a_file_is_refused_before_anything_is_fetched(site):
    with loopback.serve({"face.png": IDENTITY, "voice.wav": site.voice}) as (base, hits):
        start = time.perf_counter()
        event, message = gradio_call(site.url, f"{base}/face.png", f"{base}/voice.wav")
        print(f"\na URL as the face: {event} {message!r} ({time.perf_counter() - start:.2f} s)")
        assert hits == [], "the server fetched the URL"
        assert event == "error" and "URL" in message and "\n" not in message
    site.done.add(good_job(site.url, site.voice, site.media)["id"])


def test_another_requests_result_cannot_be_named_as_an_input(site):
    finished = site.served.server.videos.get(next(iter(site.done))).video
    assert finished.is_file()
    start = time.perf_counter()
    event, message = gradio_call(site.url, uploaded(site.url, IDENTITY), str(finished))
    print(f"\nanother request's mp4 as the voice: {event} {message!r} ({time.perf_counter() - start:.2f} s)")
    assert event == "error" and "\n" not in message
    assert "not a file this client uploaded" in message or "not uploaded by a user" in message, message
    site.done.add(good_job(site.url, site.voice, site.media)["id"])


def test_a_client_holds_at_most_its_places_and_a_deleted_job_frees_its_place_at_once(site):
    queue, url, ids = site.served.server.queue, site.url, []
    elsewhere = httpx.HTTPTransport(local_address="127.0.0.2")  # another client on loopback
    try:
        with queue.place("someone else", "job", time.monotonic() + 60):  # the only slot: every job below waits
            for _ in range(2):
                answer = post(url, site.voice)
                assert answer.status_code == 202 and answer.json()["status"] == "queued", answer.text
                ids.append(answer.json()["id"])
            assert sorted(httpx.get(f"{url}v1/videos/{i}").json()["position"] for i in ids) == [0, 1]
            start = time.perf_counter()
            refused("a third request from 127.0.0.1", post(url, site.voice), 400, "already have 2 requests",
                    started=start)
            answer = post(url, site.voice, transport=elsewhere)
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["id"])
            waiting = queue.counts()[0]
            assert httpx.delete(f"{url}v1/videos/{ids.pop(0)}").status_code == 204
            left_at_once = queue.counts()[0]
            again = post(url, site.voice)
            ids += [again.json()["id"]] if again.status_code == 202 else []
            assert (left_at_once, again.status_code) == (waiting - 1, 202), \
                f"the deleted job kept its place after DELETE answered: {left_at_once} waiting, then {again.text}"
    finally:
        for job in ids:
            httpx.delete(f"{url}v1/videos/{job}")
    wait_for(lambda: queue.counts() == (0, 0))
    site.done.add(good_job(site.url, site.voice, site.media)["id"])


def test_uploads_past_the_size_limit_or_without_a_length_are_refused(site):
    huge = site.media / "huge.wav"
    huge.write_bytes(os.urandom(4 << 20))  # more than all three files may hold
    start = time.perf_counter()
    refused("a 4 MB voice", post(site.url, huge), 413, "larger than this server takes", started=start)

    def chunks():
        yield b"--x\r\nContent-Disposition: form-data; name=\"face\"; filename=\"f.png\"\r\n\r\n"
        yield IDENTITY.read_bytes() + b"\r\n--x--\r\n"

    start = time.perf_counter()
    answer = httpx.post(f"{site.url}v1/videos", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=x"})
    refused("a chunked upload", answer, 411, "Content-Length", started=start)
    site.done.add(good_job(site.url, site.voice, site.media)["id"])
    big = site.media / "big.wav"
    big.write_bytes(os.urandom(3 << 19))  # 1.5 MB: one file over the 1 MB limit, all three within what the server reads
    start = time.perf_counter()
    refused("a 1.5 MB voice", post(site.url, big), 413, "big.wav", "1 MB", started=start)
    site.done.add(good_job(site.url, site.voice, site.media)["id"])


def test_no_folder_outlives_its_job_and_memory_stays_bounded(site):
    """After every hostile request above (the tests below start servers of their own in this process)."""
    videos, workspace = site.served.server.videos, site.served.workspace
    assert [p.name for p in workspace.root.iterdir()] == ["requests"], "a request's staging folder was left"
    for folder in workspace.folders():
        job = videos.get(folder.name)
        assert job is not None and job.status == "done" and job.id in site.done, folder
    assert {f.name for f in workspace.folders()} == site.done
    peak = site.memory.stop()
    print(f"\npeak RSS {peak >> 20} MiB, {(peak - site.after_first_job) >> 20} MiB over the size after the first job")
    assert peak - site.after_first_job < MEMORY_BOUND


def test_a_job_past_the_time_limit_is_cancelled_and_its_folder_removed(synth_weights, site, monkeypatch):
    from pcavs.models.generator import Generator

    real, release = Generator.forward, threading.Event()

    def stuck(self, *args, **kwargs):  # the generator hangs until the test lets it go
        release.wait(60)
        return real(self, *args, **kwargs)

    with launched(synth_weights, job_timeout=10, max_seconds=5) as served:
        monkeypatch.setattr(Generator, "forward", stuck)
        start = time.perf_counter()
        try:
            answer = post(served.url, site.voice)
            assert answer.status_code == 202, answer.text
            job = served.server.videos.get(answer.json()["id"])
            assert job.wait(60)
            seen = httpx.get(f"{served.url}v1/videos/{job.id}").json()
        finally:
            release.set()
        print(f"\na job past the 10 s limit: {seen['status']} {seen['error']!r} ({time.perf_counter() - start:.2f} s)")
        assert seen["status"] == "cancelled" and "10 s limit" in seen["error"], seen
        wait_for(lambda: served.server.videos.get(job.id) is None)
        assert not job.folder.exists() and served.workspace.folders() == []
        assert httpx.get(f"{served.url}v1/videos/{job.id}").status_code == 404
        monkeypatch.undo()
        good_job(served.url, site.voice, site.media)


def test_with_logins_nothing_is_served_without_one(synth_weights, site):
    with launched(synth_weights, auth=[("ann", "secret")]) as served:
        url = served.url
        page = httpx.get(url)
        assert '"auth_required":true' in page.text and '"components":[]' in page.text and "Make the video" not in page.text
        answers = {"/gradio_api/upload": httpx.post(f"{url}gradio_api/upload", files={"files": ("v.wav", b"RIFF")}),
                   "/gradio_api/file=": httpx.get(f"{url}gradio_api/file={IDENTITY}"),
                   "/gradio_api/info": httpx.get(f"{url}gradio_api/info"),
                   "/config": httpx.get(f"{url}config"),
                   "/generate": httpx.post(f"{url}gradio_api/call/generate", json={"data": []}),
                   "/v1/videos/x": httpx.get(f"{url}v1/videos/x"),
                   "/v1/videos": post(url, site.voice),
                   "/v1/videos/x (wrong password)": httpx.get(f"{url}v1/videos/x", auth=("ann", "guess"))}
        print("\nwithout a login: " + ", ".join(f"{k} {a.status_code}" for k, a in answers.items()))
        assert all(a.status_code == 401 for a in answers.values())
        assert httpx.get(f"{url}v1/videos/x", auth=("ann", "secret")).status_code == 404  # let in: no such video
        good_job(url, site.voice, site.media, auth=("ann", "secret"))
        assert "/generate" not in page.text, "the login page describes the app's API (window.gradio_api_info)"


def test_a_public_link_needs_a_login_or_no_auth_and_then_warns_in_the_page(synth_weights, monkeypatch):
    import gradio.networking

    import pcavs
    from support.web import free_port

    monkeypatch.delenv("PCAVS_AUTH", raising=False)
    monkeypatch.setattr(gradio.networking, "setup_tunnel", lambda *a: (_ for _ in ()).throw(OSError("loopback only")))
    with pytest.raises(InputError, match="--no-auth"):
        pcavs.serve(port=free_port(), checkpoints=synth_weights, device="cpu", block=False, share=True)
    with pytest.warns(UserWarning, match="without a login"):
        served = pcavs.serve(port=free_port(), checkpoints=synth_weights, device="cpu", block=False, share=True,
                             no_auth=True)
    try:
        assert served.share_url is None and "without a login" in httpx.get(served.url).text
    finally:
        served.close()


def test_two_servers_in_one_process_and_the_environment_untouched(synth_weights, site, monkeypatch):
    # Gradio writes HF_HUB_DISABLE_TELEMETRY whenever a page is built: the module's server may have set it already
    monkeypatch.delenv("HF_HUB_DISABLE_TELEMETRY", raising=False)
    before = dict(os.environ)
    with launched(synth_weights) as second:
        with launched(synth_weights) as first:
            assert first.workspace.root != second.workspace.root
        good_job(second.url, site.voice, site.media)
    changed = {k: (before.get(k), os.environ.get(k)) for k in before.keys() | os.environ.keys()
               if before.get(k) != os.environ.get(k)}
    assert changed == {}, changed
