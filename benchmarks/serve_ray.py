"""`pcavs serve --ray` against the in-process server, through the HTTP API on loopback (a local Ray, no dashboard):

    python benchmarks/serve_ray.py [--jobs 4] [--seconds 0.4] [--checkpoints DIR] [--cpus 2]

Prints, for the in-process server (one torch thread) and for 1 and 2 CPU replicas (one thread each): the time
of one job alone and what Ray Serve adds to it, the time from submitting it to its first frame through the
frame stream (`GET /v1/videos/{id}/frames`), and the throughput of `--jobs` jobs sent at once from as many
clients. Without --checkpoints the weights are synthesized (the faces are noise; the timings are real). Never
run by the tests.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support.kits import INPUTS  # noqa: E402
from support.web import free_port, short_speech  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=4, help="jobs sent at once for the throughput")
    parser.add_argument("--seconds", type=float, default=0.4, help="each job's voice (at most 1.28 s)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs the local Ray may use")
    parser.add_argument("--checkpoints", help="real weights (default: synthesized)")
    args = parser.parse_args()
    import ray
    import torch

    torch.set_num_threads(1)  # the in-process server as one replica: one thread
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        checkpoints = args.checkpoints
        if checkpoints is None:
            from support.pcavs_weights import write_checkpoints

            checkpoints = write_checkpoints(folder / "weights")
        voice = short_speech(folder, args.seconds)
        print(f"{args.jobs} jobs of {args.seconds:g} s ({round(args.seconds * 25)} frames), mode crop, aligned face")
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


if __name__ == "__main__":
    main()
