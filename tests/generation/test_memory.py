"""Out of device memory, the identity and pose encoders (V, E) and the audio encoder (A_sync) split their batches as
the generator does (see test_reliability.py): the job goes on with the same codes, and a network that cannot take
even one item fails with a one-line OutOfMemoryError naming it."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from pcavs.core.errors import OutOfMemoryError

from support.generators import stand_in
from support.kits import INPUTS
from support.media import tone

CROP = str(INPUTS / "identity" / "000000.png")
POSE = sorted(str(p) for p in (INPUTS / "pose").glob("*.png"))[:4]


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    path = tmp_path_factory.mktemp("voice") / "voice.wav"
    sf.write(path, tone(2 * 640 / 16000, 16000), 16000)
    return path


@pytest.fixture
def faces(pipeline, voice, monkeypatch):
    """The faces of a job with two photos, four pose frames and two frames of audio, in batches of four;
    and for each network, how many items each of its calls got."""
    calls: dict[str, list[int]] = {}

    def counted(name, network):
        forward = type(network).forward

        def count(self, x, *args, **kwargs):
            calls.setdefault(name, []).append(len(x))
            return forward(self, x, *args, **kwargs)

        monkeypatch.setattr(type(network), "forward", count)
        return forward

    nets = pipeline.networks
    forwards = {name: counted(name, getattr(nets, name)) for name in ("V", "E", "A_sync")}
    monkeypatch.setattr(type(nets.G), "forward", stand_in)  # the encoders are tested here: a cheap generator

    def job():
        calls.clear()
        return pipeline([CROP, CROP], voice, POSE, out=None, aligned=True, mode="crop", batch_size=4,
                        progress=False, return_faces=True).faces

    return job, calls, forwards


@pytest.mark.parametrize("name", ["V", "E", "A_sync"])
def test_an_encoder_out_of_memory_splits_its_batch(pipeline, faces, monkeypatch, name):
    job, calls, forwards = faces
    expected = job()
    assert max(calls[name]) > 1  # the network sees batches that can be split
    network = getattr(pipeline.networks, name)

    def small_memory(self, x, *args, **kwargs):
        if len(x) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        calls.setdefault(name, []).append(len(x))
        return forwards[name](self, x, *args, **kwargs)

    monkeypatch.setattr(type(network), "forward", small_memory)
    split = job()
    assert set(calls[name]) == {1}  # every batch it got was split down to what fits
    assert split.shape == expected.shape and np.abs(split.astype(int) - expected.astype(int)).max() <= 2

    monkeypatch.setattr(type(network), "forward", lambda self, *a, **k: (_ for _ in ()).throw(torch.OutOfMemoryError("oom")))
    with pytest.raises(OutOfMemoryError, match=f"out of memory even for one .*{name}"):
        job()
