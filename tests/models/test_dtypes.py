"""Reduced precision through the real pipeline on the CPU, so dtype mismatches cannot hide until a GPU runs it."""
from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
import soundfile as sf
import torch

import pcavs
from pcavs.core.devices import has_bf16_instructions
from support.kits import DATA, INPUTS


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


def test_auto_dtype_is_bfloat16_only_on_cpus_with_bf16_instructions(monkeypatch):
    from pcavs.core import devices

    cpu = torch.device("cpu")
    monkeypatch.setattr(devices, "has_bf16_instructions", lambda: True)
    assert devices.resolve_dtype("auto", cpu) == torch.bfloat16
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning where the CPU has them
        assert devices.resolve_dtype("bfloat16", cpu) == torch.bfloat16
    monkeypatch.setattr(devices, "has_bf16_instructions", lambda: False)
    assert devices.resolve_dtype("auto", cpu) == torch.float32
    assert devices.resolve_dtype(None, cpu) == torch.float32  # unset stays float32 everywhere
    with pytest.warns(UserWarning, match="no bfloat16 instructions"):
        devices.resolve_dtype("bfloat16", cpu)


@pytest.mark.slow
@pytest.mark.skipif(not has_bf16_instructions(), reason="needs a CPU with AVX512_BF16 or AMX")
def test_bfloat16_quality_bound_that_auto_relies_on(synth_weights, pipeline, gfpgan_checkpoint):
    """The bound README's Speed section states for dtype="auto" on such CPUs (measured: faces max 5, mean 0.49
    levels; restored faces max 2, mean 0.33): generator faces within 8 levels and a mean of 1, restored within
    4 and a mean of 0.6, against float32 on the kits' synthesized weights."""
    from pcavs.restore.restorer import Restorer

    job = dict(face=str(INPUTS / "identity" / "000000.png"), audio=INPUTS / "speech_short.wav", out=None,
               aligned=True, progress=False)
    half = pcavs.Pipeline.from_pretrained(synth_weights, device="cpu", dtype="auto")
    assert half.dtype == torch.bfloat16
    difference = np.abs(half(**job).faces.astype(int) - pipeline(**job).faces.astype(int))
    assert difference.max() <= 8 and difference.mean() <= 1.0, (difference.max(), difference.mean())
    faces = cv2.cvtColor(cv2.imread(str(DATA / "gfpgan" / "input_000000.png")), cv2.COLOR_BGR2RGB)[None]
    low = Restorer.from_pretrained(gfpgan_checkpoint, device="cpu", dtype="auto")(faces)
    full = Restorer.from_pretrained(gfpgan_checkpoint, device="cpu")(faces)
    difference = np.abs(low.astype(int) - full.astype(int))
    assert difference.max() <= 4 and difference.mean() <= 0.6, (difference.max(), difference.mean())


def test_modulated_conv_keeps_its_scaled_weight_only_while_the_weight_is_unchanged():
    """Inference reuses the scaled weight and its energy between calls: bit-identical to computing them afresh,
    and recomputed after an in-place edit or a dtype change."""
    from pcavs.models.generator import ModulatedConv2d, demodulation, modulated_conv2d, weight_energy

    torch.manual_seed(0)
    conv = ModulatedConv2d(8, 4, 3)
    for p in conv.parameters():
        torch.nn.init.normal_(p)
    x, style = torch.randn(2, 8, 5, 5), torch.randn(2, 2560)

    def fresh():
        weight, styles = conv.weight[0] * conv.scale, conv.modulation(style)
        return modulated_conv2d(x, weight, styles), demodulation(weight_energy(weight), styles)

    with torch.inference_mode():
        for _ in range(2):
            out, demod = conv(x, style)
            expected = fresh()
            assert torch.equal(out, expected[0]) and torch.equal(demod, expected[1])
        with torch.no_grad():
            conv.weight.mul_(2)
    with torch.inference_mode():
        out, demod = conv(x, style)
        assert torch.equal(out, fresh()[0]) and torch.equal(demod, fresh()[1])
        conv.to(torch.float64)
        out, demod = conv(x.double(), style.double())
        expected = demodulation(weight_energy(conv.weight[0] * conv.scale), conv.modulation(style.double()))
        assert out.dtype == torch.float64 and torch.equal(demod, expected)


def test_avx512_without_bf16_flags_counts_as_emulated(monkeypatch):
    from pcavs.core import devices

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)  # what oneDNN says on AVX-512
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset({"avx512f", "avx512bw"}))
    assert not devices.has_bf16_instructions() and devices.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset({"avx512f", "amx_bf16"}))
    assert devices.has_bf16_instructions()
