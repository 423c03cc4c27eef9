"""`pcavs serve --ray`: the networks run as a Ray Serve deployment, the page and the HTTP API stay in this process.

`Generator` is the deployment: each replica loads the networks once (one GPU each on a GPU cluster, else one CPU
and one torch thread each) and takes one job at a time. A job travels as bytes: the frontend reads the face, the
voice (16 kHz wav) and the pose from the job's folder and sends them; the replica works in a temporary folder
of its own, streams the same events as `make_video` (frames as JPEG), then the mp4 as bytes, and deletes its
folder; the frontend writes the mp4 into the job's folder. No filesystem is shared, so results reach the client
however many machines the replicas run on.

`RayBackend` is the frontend's `Backend`: one slot per replica, in the server's one queue. A replica that dies
under a job (killed, out of memory, its node lost) is replaced by Ray Serve; the job runs once more, on another
replica, then fails with a one-line reason. Live does not run under Ray: see `LIVE_REFUSED`.
"""
from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

from ..batches.cluster import actor_reason, connect, import_ray, worker_model
from ..core.errors import InputError, PcavsError, one_line
from .jobs import RESULT_NAME, Inputs, Slot
from .video import make_video

APP = "pcavs"  # the Ray Serve application of `pcavs serve --ray`
DEPLOYMENT = "Generator"
RETRIES = 1  # runs of a job after the first, when its replica dies under it
SERVE_INSTALL = 'pip install "pcavs[ray]" (Ray Serve: ray[serve])'
LIVE_REFUSED = ("Live does not run under pcavs serve --ray: its microphone stream needs the networks in this process; "
                "start pcavs serve without --ray for Live")


def import_serve():
    """The `ray.serve` module, or a one-line InputError saying how to install it."""
    import_ray()
    try:
        from ray import serve
    except ImportError:
        raise InputError(f"--ray: serving on Ray needs Ray Serve, which is not installed; {SERVE_INSTALL}") from None
    return serve


class Generator:
    """One replica: a Pipeline loaded once, then jobs one after another (the Ray Serve deployment's class)."""

    def __init__(self, model: dict, threads: int | None):
        from ..generation.pipeline import Pipeline

        if threads:
            import torch

            torch.set_num_threads(threads)
        self.pipeline = Pipeline.from_pretrained(**model)

    async def make(self, files: dict[str, tuple[str, bytes]], options: Any, folder: str) -> AsyncIterator[tuple]:
        """The job of `files` (role -> (file name, bytes): face, voice and pose) with `options`: make_video's events,
        with each new stage among them, and the mp4 as ("video", bytes). Errors name the files as in the frontend's
        `folder`. The job runs on a thread of its own; cancelling the request stops it at its next frame."""
        loop = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()
        thread = threading.Thread(target=self._produce, name="pcavs-replica-job", daemon=True,
                                  args=(files, options, folder, lambda item: loop.call_soon_threadsafe(items.put_nowait, item), stop))
        thread.start()
        try:
            while True:
                more, value = await items.get()
                if not more:
                    if value is not None:
                        raise value
                    return
                yield value
        finally:
            stop.set()
            await loop.run_in_executor(None, thread.join)  # one job at a time: this one ends before the next starts

    def _produce(self, files: dict, options: Any, folder: str, put: Callable[[tuple], None], stop: threading.Event) -> None:
        """The job, in a temporary folder of this replica's (deleted after); each event `put` as (True, event),
        then (False, None), or (False, the error)."""
        said = [None]

        def stage(text: str) -> None:
            if text != said[0]:
                said[0] = text
                put((True, ("stage", text)))

        try:
            with tempfile.TemporaryDirectory(prefix="pcavs-replica-") as work:
                here = Path(work)
                paths = {}
                for role, (name, data) in files.items():
                    paths[role] = here / Path(name).name
                    paths[role].write_bytes(data)
                inputs = Inputs(paths["face"], paths["voice"], paths.get("pose"), {})
                events = make_video(self.pipeline, inputs, options, here, stage)
                try:
                    for event in events:
                        put((True, ("video", Path(event[1]).read_bytes()) if event[0] == "video" else event))
                        if stop.is_set():
                            break
                except PcavsError as exc:
                    raise type(exc)(str(exc).replace(work, folder)) from None
                finally:
                    events.close()
            put((False, None))
        except BaseException as exc:  # noqa: BLE001 - raised to the request
            put((False, exc))


class RayBackend:
    """The frontend's slots: one per replica of the Generator deployment, each with a thread that follows its job."""

    live = LIVE_REFUSED

    def __init__(self, handle: Any, replicas: int, device_type: str, close: Callable[[], None] = lambda: None):
        self.handle = handle.options(stream=True)
        self.replicas = replicas
        self.device_type = device_type
        self._close = close
        self._slots = [Slot(self.handle, ThreadPoolExecutor(1, thread_name_prefix=f"pcavs-replica-{n}"))
                       for n in range(replicas)]

    def slots(self) -> list[Slot]:
        return list(self._slots)

    def work(self, handle: Any, inputs: Inputs, options: Any, folder: Path, stage: Callable[[str], None]) -> Iterator[tuple]:
        """The job on a replica (`handle`: the deployment's streaming handle); events as `make_video`'s, the mp4
        written into `folder`. Runs once more when the replica dies under it; frames already given are not repeated."""
        from ray.exceptions import RayActorError, RayTaskError

        files = {role: (path.name, path.read_bytes())
                 for role, path in (("face", inputs.face), ("voice", inputs.voice), ("pose", inputs.pose)) if path}
        given = 0
        for attempt in range(RETRIES + 1):
            response = handle.make.remote(files, options, str(folder))
            ended = False
            try:
                for event in response:
                    if event[0] == "frame":
                        if event[1] < given:
                            continue
                        given = event[1] + 1
                    elif event[0] == "video":
                        event = ("video", _write(folder / RESULT_NAME, event[1]))
                    yield event
                ended = True
                return
            except RayTaskError as exc:  # the job's own error, raised in the replica
                ended = True
                cause = getattr(exc, "cause", None)
                raise (cause if isinstance(cause, Exception) else PcavsError(one_line(exc))) from None
            except RayActorError as exc:  # the replica died under the job
                ended = True
                if attempt == RETRIES:
                    raise PcavsError(f"its replica died {attempt + 1} times while making it ({actor_reason(exc)})") from None
                yield "stage", "its replica stopped; making it again on another"
            finally:
                if not ended:  # cancelled, timed out, or the server stops
                    response.cancel()

    def close(self) -> None:
        for slot in self._slots:
            slot.thread.shutdown(wait=False)
        self._slots.clear()
        self._close()


def _write(path: Path, data: bytes) -> Path:
    """`data` as `path`, whole or absent."""
    part = path.with_name(f".{path.name}.part")
    part.write_bytes(data)
    os.replace(part, path)
    return path


def replica_plan(resources: dict, replicas: int | None) -> tuple[int, dict, int | None, str]:
    """(replicas, actor resources, torch threads, device type): one GPU each on a GPU cluster (one per GPU unless
    `replicas` says), else one CPU and one thread each (`replicas`, default 1)."""
    gpus = int(resources.get("GPU", 0))
    if replicas is not None and replicas < 1:
        raise InputError(f"--replicas: {replicas} must be 1 or more")
    if gpus:
        return replicas or gpus, {"num_gpus": 1, "num_cpus": 1}, None, "cuda"
    return replicas or 1, {"num_cpus": 1}, 1, "cpu"


def deployment(serve, count: int, resources: dict):
    """The Generator deployment: `count` replicas of `resources` each, one job at a time each."""
    return serve.deployment(Generator, name=DEPLOYMENT, num_replicas=count, max_ongoing_requests=1,
                            ray_actor_options=resources)


def start(address: str, replicas: int | None, checkpoints: str | os.PathLike | None, device: str) -> RayBackend:
    """Connect to Ray at `address` ("local": a new Ray on this machine; "auto": $RAY_ADDRESS or the `ray start`
    cluster here, else a new one), run the Generator deployment, and return the backend that feeds it."""
    ray = import_ray()
    serve = import_serve()
    owned = connect(ray, address)
    try:
        count, resources, threads, device_type = replica_plan(ray.cluster_resources(), replicas)
        model = worker_model({"checkpoints": checkpoints, "device": device if device != "auto" else device_type},
                             "num_gpus" in resources)
        serve.start(proxy_location="Disabled")  # no Serve HTTP proxy: this process serves the page and the API
        try:
            handle = serve.run(deployment(serve, count, resources).bind(model, threads), name=APP, route_prefix=None)
        except (RuntimeError, ray.exceptions.RayError) as exc:
            raise PcavsError(f"--ray: the {DEPLOYMENT} replicas did not start ({one_line(exc, 200)}); "
                             "check the weights (--checkpoints) and the cluster's logs") from None
    except BaseException:
        if owned:
            ray.shutdown()
        raise

    def stop() -> None:
        try:
            serve.delete(APP)
        finally:
            if owned:
                serve.shutdown()
                ray.shutdown()

    return RayBackend(handle, count, device_type, stop)
