"""The web app as a user meets it: `pcavs.serve()` on loopback, headless chromium (Debian's, with a fake webcam and
a microphone of clicks), a photo and voices of `--seconds` uploaded in "Make a video", then `--live` seconds in
"Live" over WebRTC, on this machine's generator and on a stand-in that takes 5 ms a frame (what a GPU sees).

    python benchmarks/serve.py [--seconds 3 10] [--live 10] [--mode full] [--device auto] [--checkpoints DIR]
    python benchmarks/serve.py --ray [--jobs 4] [--job-seconds 0.4] [--cpus 2] [--checkpoints DIR]

Prints, measured in the page: the time from the click to the first frame on screen and to the mp4; in Live,
the latency from a click in the microphone to its frame on screen (median and p95), the frame rates shown and
made, and the frames dropped.

With --ray, `pcavs serve --ray` against the in-process server through the HTTP API on loopback (a local Ray, no
dashboard): for the in-process server (one torch thread) and for 1 and 2 CPU replicas (one thread each), the
time of one job alone and what Ray Serve adds to it, the time from submitting it to its first frame through the
frame stream (`GET /v1/videos/{id}/frames`), and the throughput of `--jobs` jobs sent at once from as many
clients. Without --checkpoints the weights are synthesized (the faces are noise; the timings are real).
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support.generators import timed_stand_in  # noqa: E402
from support.kits import INPUTS  # noqa: E402
from support.web import (CHROMIUM, chromium, click_track, fake_devices, free_port, make_video, record_live,  # noqa: E402
                         short_speech)


def voice_of(seconds: float, path: Path) -> Path:
    """The kit's speech, repeated to `seconds`."""
    speech, rate = sf.read(INPUTS / "speech.wav", dtype="float32")
    sf.write(path, np.resize(speech, round(seconds * rate)), rate)
    return path


def live(browser, url: str, seconds: float, name: str) -> None:
    context = browser.new_context(permissions=["camera", "microphone"], viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.goto(url)
    f = record_live(page, seconds)
    context.close()
    latency = "none timed" if f["median"] is None else f"median {f['median']:.3f} s, p95 {f['p95']:.3f} s"
    print(f"live, {name} ({seconds:g} s): latency sound to face {latency} ({len(f['latencies'])} clicks); "
          f"{f['shown_fps']:.1f} fps shown, {f['made_fps']:.1f} fps made, {f['made']} made, {f['dropped']} dropped; "
          f"a frame takes {f['work']:.3f} s to make (the bound: that + 80 ms lookahead + 150 ms = {f['work'] + 0.23:.3f} s)")


FACE = INPUTS / "identity" / "000000.png"  # an aligned 224x224 face


def submit(client: httpx.Client, url: str, voice: Path) -> str:
    with open(FACE, "rb") as face, open(voice, "rb") as audio:
        answer = client.post(f"{url}v1/videos", files={"face": ("face.png", face), "audio": ("voice.wav", audio)},
                             data={"aligned": "true", "mode": "crop"})
    answer.raise_for_status()
    return answer.json()["id"]


def first_frame(client: httpx.Client, url: str, job: str) -> None:
    """Return once the job's frame stream has given its first JPEG."""
    with client.stream("GET", f"{url}v1/videos/{job}/frames") as stream:
        for line in stream.iter_lines():
            if line.startswith("Content-Type: image/jpeg"):
                return


def done(client: httpx.Client, url: str, job: str) -> None:
    while (status := client.get(f"{url}v1/videos/{job}").json())["status"] not in ("done", "failed", "cancelled"):
        time.sleep(0.05)
    if status["status"] != "done":
        raise SystemExit(f"a job {status['status']}: {status['error']}")
    client.delete(f"{url}v1/videos/{job}")


def one_job(url: str, voice: Path) -> tuple[float, float]:
    """(seconds to the first frame through the stream, seconds to done) of one job alone."""
    with httpx.Client(timeout=600) as client:
        start = time.perf_counter()
        job = submit(client, url, voice)
        first_frame(client, url, job)
        first = time.perf_counter() - start
        done(client, url, job)
        return first, time.perf_counter() - start


def throughput(url: str, voice: Path, jobs: int) -> float:
    """Jobs a minute with `jobs` clients (distinct loopback addresses) each sending one job at once."""
    clients = [httpx.Client(timeout=600, transport=httpx.HTTPTransport(local_address=f"127.0.0.{n + 2}"))
               for n in range(jobs)]
    start = time.perf_counter()
    ids = [submit(client, url, voice) for client in clients]
    threads = [threading.Thread(target=done, args=(client, url, job)) for client, job in zip(clients, ids)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for client in clients:
        client.close()
    return jobs * 60 / (time.perf_counter() - start)


def measure(name: str, voice: Path, jobs: int, **options) -> float:
    """One server: its one job alone (after a first), then `jobs` at once; prints them, returns one job's seconds."""
    import pcavs

    served = pcavs.serve(port=free_port(), device="cpu", block=False, per_client=1, **options)
    try:
        one_job(served.url, voice)  # warm: the first job of a process pays for its lazy imports
        first, alone = one_job(served.url, voice)
        rate = throughput(served.url, voice, jobs)
    finally:
        served.close()
    print(f"{name:<28} one job {alone:6.2f} s, first frame {first:5.2f} s; {jobs} jobs at once: {rate:5.1f} jobs/min",
          flush=True)
    return alone


def ray_figures(args) -> None:
    """--ray: the in-process server, then 1 and 2 CPU replicas on a local Ray."""
    import ray
    import torch

    torch.set_num_threads(1)  # the in-process server as one replica: one thread
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        checkpoints = args.checkpoints
        if checkpoints is None:
            from support.pcavs_weights import write_checkpoints

            checkpoints = write_checkpoints(folder / "weights")
        voice = short_speech(folder, args.job_seconds)
        print(f"{args.jobs} jobs of {args.job_seconds:g} s ({round(args.job_seconds * 25)} frames), mode crop, aligned face")
        local = measure("in process, 1 thread", voice, args.jobs, checkpoints=checkpoints)
        ray.init(num_cpus=args.cpus, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level=logging.WARNING)
        try:
            for replicas in (1, 2):
                alone = measure(f"ray, {replicas} replica{'s' if replicas > 1 else ''} x 1 thread", voice, args.jobs,
                                checkpoints=checkpoints, ray="local", replicas=replicas)
                print(f"{'':<28} Ray Serve adds {alone - local:+.2f} s to one job")
        finally:
            from ray import serve

            serve.shutdown()
            ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, nargs="*", default=[3.0, 10.0], help="the voices' lengths (none: Live only)")
    parser.add_argument("--live", type=float, default=10.0, help="seconds to record in Live")
    parser.add_argument("--mode", default="full", choices=("full", "crop", "grid"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--checkpoints", help="real weights (default: synthesized)")
    parser.add_argument("--ray", action="store_true", help="compare pcavs serve --ray with the in-process server")
    parser.add_argument("--jobs", type=int, default=4, help="--ray: jobs sent at once for the throughput")
    parser.add_argument("--job-seconds", type=float, default=0.4, help="--ray: each job's voice (at most 1.28 s)")
    parser.add_argument("--cpus", type=int, default=2, help="--ray: CPUs the local Ray may use")
    args = parser.parse_args()
    if args.ray:
        return ray_figures(args)
    if CHROMIUM is None:
        sys.exit("no chromium found: apt-get install chromium (or set $PCAVS_CHROMIUM)")
    import pcavs
    from pcavs.core.assets import DEMO_FACE

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        checkpoints = args.checkpoints
        if checkpoints is None:
            from support.pcavs_weights import write_checkpoints

            checkpoints = write_checkpoints(folder / "weights")
        with chromium(*fake_devices(folder, DEMO_FACE, click_track(folder, every=1.5))) as browser:  # one click per 1.5 s: no frame is paired with the wrong click
            start = time.perf_counter()
            served = pcavs.serve(port=free_port(), checkpoints=checkpoints, device=args.device, block=False)
            print(f"server up in {time.perf_counter() - start:.1f} s")
            try:
                for seconds in args.seconds:
                    context = browser.new_context(viewport={"width": 1280, "height": 1000})
                    page = context.new_page()
                    page.goto(served.url)
                    t = make_video(page, DEMO_FACE, voice_of(seconds, folder / f"voice{seconds:g}.wav"),
                                   None if args.mode == "full" else args.mode, 3600)
                    context.close()
                    print(f"make a video ({seconds:g} s voice, {args.mode} mode): first frame on screen after "
                          f"{t['first']:.1f} s, mp4 after {t['mp4']:.1f} s, {t['shown']} frames shown while made")
                live(browser, served.url, 2, "this machine's generator, the first recording (Live's warm-up)")
                live(browser, served.url, args.live, "this machine's generator")
            finally:
                served.close()
            with pytest.MonkeyPatch.context() as patch:
                timed_stand_in(patch, 0.005)
                served = pcavs.serve(port=free_port(), checkpoints=checkpoints, device=args.device, block=False,
                                     live_dtype="float32")
                try:
                    live(browser, served.url, args.live, "a stand-in generator of 5 ms a frame")
                finally:
                    served.close()


if __name__ == "__main__":
    main()
