"""`pcavs serve --ray`: the page and the HTTP API here, the networks in Ray Serve replicas on a Ray started in the test
(loopback, 2 CPUs, no dashboard): a job's round trip through the HTTP API, the same video as the in-process
server's, a replica killed mid-job, a Live recording over WebRTC from a browser, and `--replicas MIN-MAX`
autoscaling."""
from __future__ import annotations

import logging
import time

import httpx
import numpy as np
import pytest

pytest.importorskip("ray.serve", reason='pcavs serve --ray needs Ray Serve: pip install "pcavs[ray]"')
pytest.importorskip("gradio", reason='the web app needs Gradio: pip install "pcavs[serve]"')

from pcavs.app.cluster import replica_range, scaling  # noqa: E402
from pcavs.core.assets import DEMO_FACE  # noqa: E402
from pcavs.core.errors import InputError  # noqa: E402
from pcavs.media.video import iter_frames  # noqa: E402
from support.kits import INPUTS  # noqa: E402
from support.web import (CHROMIUM, chromium, click_track, fake_devices, grey_photo, launched, record_live,  # noqa: E402
                         short_speech)

IDENTITY = INPUTS / "identity" / "000000.png"  # an aligned 224x224 face
ENDED = ("done", "failed", "cancelled")


@pytest.fixture(scope="module")
def ray_local():
    import ray
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level=logging.WARNING)
    try:
        yield ray
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each CPU replica
    yield
    torch.set_num_threads(threads)


def submit(client: httpx.Client, url: str, voice, **options) -> str:
    with open(IDENTITY, "rb") as face, open(voice, "rb") as audio:
        answer = client.post(f"{url}v1/videos", files={"face": ("me.png", face, "image/png"),
                                                        "audio": ("hello.wav", audio, "audio/wav")},
                             data={"aligned": "true", "mode": "crop", **options})
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def finished(client: httpx.Client, url: str, job: str, timeout: float = 300) -> dict:
    end = time.monotonic() + timeout
    while True:
        status = client.get(f"{url}v1/videos/{job}").json()
        if status["status"] in ENDED:
            return status
        assert time.monotonic() < end, f"job {job} still {status}"
        time.sleep(0.2)


def made(client: httpx.Client, url: str, voice, folder, name: str) -> list[np.ndarray]:
    """The decoded frames of one job's mp4 (then the job deleted)."""
    job = submit(client, url, voice)
    status = finished(client, url, job)
    assert status["status"] == "done", status
    mp4 = folder / name
    mp4.write_bytes(client.get(f"{url}v1/videos/{job}/content").content)
    assert client.delete(f"{url}v1/videos/{job}").status_code == 204
    assert client.get(f"{url}v1/videos/{job}").status_code == 404
    return list(iter_frames(mp4))


def test_a_job_through_the_http_api_on_a_replica_is_the_in_process_servers_video(ray_local, synth_weights, tmp_path,
                                                                                one_thread):
    voice = short_speech(tmp_path, 0.12)
    with launched(synth_weights, ray="local", replicas=1) as served, httpx.Client(timeout=60) as client:
        start = time.monotonic()
        remote = made(client, served.url, voice, tmp_path, "ray.mp4")
        print(f"\nray: a 3-frame job in {time.monotonic() - start:.2f} s")
        with open(grey_photo(tmp_path), "rb") as wall, open(voice, "rb") as audio:  # the replica's error, one line
            job = client.post(f"{served.url}v1/videos", files={"face": ("wall.png", wall), "audio": ("hello.wav", audio)},
                              data={"mode": "crop"}).json()["id"]
        status = finished(client, served.url, job)
        assert status["status"] == "failed" and "wall.png" in status["error"] and "no face found" in status["error"], status
        assert "\n" not in status["error"] and "/tmp" not in status["error"] and "Ray" not in status["error"], status
    with launched(synth_weights) as served, httpx.Client(timeout=60) as client:
        start = time.monotonic()
        local = made(client, served.url, voice, tmp_path, "local.mp4")
        print(f"in process: a 3-frame job in {time.monotonic() - start:.2f} s")
    assert len(remote) == len(local) == 3
    for ours, theirs in zip(remote, local):
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)


def replicas(ray) -> list[str]:
    """The names of the Generator's live replica actors."""
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["namespace"] == "serve" and a["name"].startswith("SERVE_REPLICA::pcavs#Generator#"))


def test_a_replica_killed_mid_job_costs_at_most_that_job_and_is_replaced(ray_local, synth_weights, tmp_path):
    from ray import serve

    voice = short_speech(tmp_path, 0.24)  # 6 frames
    clients = [httpx.Client(timeout=60, transport=httpx.HTTPTransport(local_address=f"127.0.0.{n}")) for n in range(2, 8)]
    with launched(synth_weights, ray="local", replicas=2) as served:
        url = served.url
        jobs = [(client, submit(client, url, voice)) for client in clients]
        end = time.monotonic() + 300
        while not any(client.get(f"{url}v1/videos/{job}").json()["frames"] for client, job in jobs):
            assert time.monotonic() < end, "no job made a frame"
            time.sleep(0.1)
        running = [s for s in (client.get(f"{url}v1/videos/{job}").json() for client, job in jobs) if s["status"] == "running"]
        assert len(running) == 2, running
        victim = replicas(ray_local)[0]
        ray_local.kill(ray_local.get_actor(victim, namespace="serve"), no_restart=True)
        ends = [finished(client, url, job) for client, job in jobs]
        print("\n" + "\n".join(f"{s['status']}: {s['frames']}/{s['total']} {s['error'] or ''}" for s in ends))
        assert all(s["status"] in ("done", "failed") for s in ends), ends
        failed = [s for s in ends if s["status"] == "failed"]
        assert len(failed) <= 1, failed
        assert all(s["error"] and "\n" not in s["error"] and len(s["error"]) <= 300 for s in failed), failed
        for (client, job), status in zip(jobs, ends):
            if status["status"] == "done":
                mp4 = tmp_path / f"{job}.mp4"
                mp4.write_bytes(client.get(f"{url}v1/videos/{job}/content").content)
                assert sum(1 for _ in iter_frames(mp4)) == 6
        # Ray Serve replaced the replica; a job submitted now finishes
        end = time.monotonic() + 120
        while not (len(replicas(ray_local)) == 2 and victim not in replicas(ray_local)):
            assert time.monotonic() < end, replicas(ray_local)
            time.sleep(0.5)
        assert finished(clients[0], url, submit(clients[0], url, voice))["status"] == "done"
        assert serve.status().applications["pcavs"].deployments["Generator"].status == "HEALTHY"
    for client in clients:
        client.close()


def test_live_over_webrtc_on_a_replica_then_a_video_job(ray_local, synth_weights, tmp_path):
    """The browser's microphone to the frontend (WebRTC), its chunks through a Ray queue to the replica, the frames
    back through Serve's streaming handle; the replica is free for a video job afterwards."""
    pytest.importorskip("aiortc", reason='Live needs aiortc: pip install "pcavs[serve]"')
    pytest.importorskip("playwright.sync_api", reason="the browser test needs Playwright: pip install playwright")
    if CHROMIUM is None:
        pytest.skip("no chromium found (apt-get install chromium, or set $PCAVS_CHROMIUM)")
    devices = fake_devices(tmp_path, DEMO_FACE, click_track(tmp_path))
    with launched(synth_weights, ray="local", replicas=1) as served, chromium(*devices) as browser, \
            httpx.Client(timeout=60) as client:
        context = browser.new_context(permissions=["camera", "microphone"])
        page = context.new_page()
        errors = []
        page.on("console", lambda message: message.type == "error" and errors.append(message.text))
        page.goto(served.url)
        figures = record_live(page, 4)
        context.close()
        print(f"\nlive on a replica: {figures['made']} frames made, {figures['shown']} shown, {figures['dropped']} dropped, "
              f"server latency {figures['server_latency']} s")
        assert errors == [], errors
        assert figures["status"] in ("live", "ended") and figures["made"] > 0 and figures["shown"] > 0, figures
        status = finished(client, served.url, submit(client, served.url, short_speech(tmp_path, 0.12)))
        assert status["status"] == "done", status
        assert served.server.queue.counts() == (0, 0)


def test_replicas_as_a_range_autoscale_and_bad_ones_are_refused():
    assert replica_range("1-4", "--replicas") == (1, 4) and replica_range(3, "--replicas") == (3, 3)
    assert replica_range(None, "--replicas") is None
    for bad in ("3-1", "0-2", "0", "x", "1-", "-2"):
        with pytest.raises(InputError, match="--replicas") as refused:
            replica_range(bad, "--replicas")
        assert "\n" not in str(refused.value)
    assert scaling((2, 2)) == {"num_replicas": 2}
    options = scaling((1, 4))
    assert list(options) == ["autoscaling_config"]
    from ray.serve.config import AutoscalingConfig

    config = AutoscalingConfig(**options["autoscaling_config"])  # Ray Serve's own names and checks
    assert (config.min_replicas, config.max_replicas, config.target_ongoing_requests) == (1, 4, 1)
    assert config.upscale_delay_s < config.downscale_delay_s


def test_replicas_min_max_deploys_an_autoscaled_generator_that_scales_up(ray_local, synth_weights, tmp_path):
    from ray import serve
    from ray.serve.context import _get_global_client

    voice = short_speech(tmp_path, 1.28)  # 32 frames: long enough for the autoscaler to see both jobs
    clients = [httpx.Client(timeout=60, transport=httpx.HTTPTransport(local_address=f"127.0.0.{n}")) for n in (2, 3)]
    with launched(synth_weights, ray="local", replicas="1-2") as served:
        generator = _get_global_client().get_serve_details()["applications"]["pcavs"]["deployments"]["Generator"]
        config = generator["deployment_config"]["autoscaling_config"]
        assert (config["min_replicas"], config["max_replicas"], config["target_ongoing_requests"]) == (1, 2, 1), config
        assert served.server.queue.slots == 2
        start = time.monotonic()
        jobs = [(client, submit(client, served.url, voice)) for client in clients]

        def running() -> int:
            states = serve.status().applications["pcavs"].deployments["Generator"].replica_states
            return states.get("RUNNING", 0)

        end = time.monotonic() + 300
        while running() < 2:
            assert time.monotonic() < end, serve.status().applications["pcavs"].deployments["Generator"]
            time.sleep(0.5)
        print(f"\n2 jobs at once: 2 running replicas after {time.monotonic() - start:.1f} s")
        assert all(finished(client, served.url, job)["status"] == "done" for client, job in jobs)
    for client in clients:
        client.close()


def test_serve_run_pcavs_serving_serves_the_page_and_the_api(ray_local, synth_weights, tmp_path):
    """What `serve run pcavs.serving:build checkpoints=...` starts, through Serve's own HTTP proxy on loopback."""
    from ray import serve

    from pcavs.serving import build
    from support.web import free_port

    port = free_port()
    serve.shutdown()  # the earlier tests' Serve has no HTTP proxy
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build({"checkpoints": str(synth_weights), "replicas": "1"}), name="web", route_prefix="/")
    try:
        url = f"http://127.0.0.1:{port}/"
        with httpx.Client(timeout=60) as client:
            page = client.get(url)
            assert page.status_code == 200 and "pcavs" in page.text
            assert made(client, url, short_speech(tmp_path, 0.12), tmp_path, "served.mp4")[0].shape == (224, 224, 3)
    finally:
        serve.delete("web")
        serve.shutdown()
