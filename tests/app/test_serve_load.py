"""Eight clients at once against one web app on loopback: every job finishes, each waiting client is told its
place in the queue, the server's memory stays bounded, and no request folder outlives the server."""
from __future__ import annotations

import time

import psutil
import pytest

pytest.importorskip("gradio", reason='the web app needs Gradio: pip install "pcavs[serve]"')
from gradio_client import Client, handle_file  # noqa: E402

from pcavs.media.video import iter_frames  # noqa: E402
from support.web import IDENTITY, PeakMemory, launched, short_speech  # noqa: E402

CLIENTS = 8
MEMORY_BOUND = 512 << 20  # bytes 8 queued jobs may cost beyond the peak of one job alone (a job alone: ~1 GiB)


def test_eight_clients_at_once(synth_weights, tmp_path):
    voice = short_speech(tmp_path, 0.12)  # 3 frames each
    with launched(synth_weights, queue=CLIENTS, per_client=CLIENTS) as served:
        root = served.workspace.root
        loaded = psutil.Process().memory_info().rss
        memory = PeakMemory()
        memory.start()
        alone = Client(served.url, verbose=False).predict(face=handle_file(IDENTITY), audio=handle_file(voice),
                                                          aligned=True, mode="crop", api_name="/generate")
        assert sum(1 for _ in iter_frames(alone)) == 3
        one_job = memory.stop()  # the networks and one job's working set
        memory = PeakMemory()
        memory.start()
        start = time.perf_counter()
        clients = [Client(served.url, verbose=False) for _ in range(CLIENTS)]
        jobs = [c.submit(face=handle_file(IDENTITY), audio=handle_file(voice), aligned=True, mode="crop",
                         api_name="/generate") for c in clients]
        waiting: set[int] = set()
        finished: dict[int, float] = {}
        while len(finished) < len(jobs):
            waiting.add(served.server.queue.counts()[0])
            for k, job in enumerate(jobs):
                if job.done() and k not in finished:
                    finished[k] = time.perf_counter() - start
            time.sleep(0.05)
        peak = memory.stop()
        outputs = [job.result() for job in jobs]
        assert all(sum(1 for _ in iter_frames(out)) == 3 for out in outputs)
        folders = served.workspace.folders()
        assert len(folders) == CLIENTS + 1 and all((f / "talking_face.mp4").is_file() for f in folders)
    # one job runs at a time; the others waited in the queue, 7 at most
    assert max(waiting) >= CLIENTS - 3, waiting
    assert peak - one_job < MEMORY_BOUND, f"8 clients took {(peak - one_job) >> 20} MiB more than one"
    assert not root.exists(), "request folders outlived the server"
    print(f"\n{CLIENTS} clients: all done in {max(finished.values()):.1f} s (first {min(finished.values()):.1f} s); "
          f"waiting at most {max(waiting)}; memory: {loaded >> 20} MiB loaded, peak {one_job >> 20} MiB with one job, "
          f"{peak >> 20} MiB with {CLIENTS} clients")
