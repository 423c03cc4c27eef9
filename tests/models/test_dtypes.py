"""Reduced precision through the real pipeline on the CPU, so dtype mismatches cannot hide until a GPU runs it."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

import pcavs
from support.kits import INPUTS


@pytest.mark.slow  # bfloat16 convolutions are ~100x slower on CPUs without bfloat16 instructions
def test_bfloat16_job_matches_float32(synth_weights, pipeline, tmp_path):
    speech = tmp_path / "one frame.wav"
    data, rate = sf.read(INPUTS / "speech_short.wav", dtype="float32")
    sf.write(speech, data[10 * 640: 11 * 640], rate)
    job = dict(face=str(INPUTS / "identity" / "000000.png"), audio=speech, pose=[str(INPUTS / "pose" / "000003.png")],
               aligned=True, out=tmp_path / "bf16.mp4", mode="grid", return_frames=True, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the warning about CPUs without bfloat16 instructions
        half = pcavs.Pipeline.from_pretrained(synth_weights, device="cpu", dtype=torch.bfloat16)
    assert {p.dtype for m in half.networks.modules() for p in m.parameters()} == {torch.bfloat16}
    low = half(**job)
    full = pipeline(**{**job, "out": tmp_path / "fp32.mp4"})
    assert low.faces.shape == full.faces.shape == (1, 224, 224, 3) and low.faces.dtype == np.uint8
    difference = np.abs(low.faces.astype(int) - full.faces.astype(int))
    assert difference.mean() < 3 and np.percentile(difference, 99) < 24  # bfloat16 keeps 8 bits of mantissa
    assert low.video.stat().st_size > 0 and low.frames.shape == full.frames.shape
