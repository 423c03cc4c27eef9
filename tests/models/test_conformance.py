"""The released checkpoint's behaviour: every golden array of the conformance kit, within its tolerance."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

import pcavs
from pcavs.media.audio import load_speech
from pcavs.models.mel import frame_windows, mel_spectrogram, normalize_rms
from pcavs.generation.pipeline import loop_index, to_model_input
from pcavs.media.images import read_image

from support.kits import INPUTS, require_kit
from support.pcavs_weights import NETS, load_manifest, synth_state_dict

FEATURE_TOL = 1e-3
MEL_TOL = 1e-4
UINT8_TOL = 2
POSE_FILES = sorted((INPUTS / "pose").glob("*.png"))
IDENTITY = INPUTS / "identity" / "000000.png"


def max_diff(ours, theirs) -> float:
    ours = ours.detach().float().numpy() if isinstance(ours, torch.Tensor) else np.asarray(ours, np.float64)
    return float(np.abs(ours - theirs).max())


@pytest.fixture(scope="module")
def short_samples():
    return normalize_rms(load_speech(INPUTS / "speech_short.wav"))


def test_audio_front_end(golden, short_samples):
    if "mel_full" in golden:  # the full kit only (the samples alone are 400 kB)
        full = normalize_rms(load_speech(INPUTS / "speech.wav"))
        assert max_diff(full, golden["wav_full_normalized"]) < FEATURE_TOL
        assert max_diff(mel_spectrogram(full), golden["mel_full"]) < MEL_TOL
    mel = mel_spectrogram(short_samples)
    assert mel.shape == golden["mel"].shape
    assert max_diff(mel, golden["mel"]) < MEL_TOL
    windows = frame_windows(mel, golden["target_frame_inds"])
    assert max_diff(windows, golden["spectrogram_windows"]) < FEATURE_TOL
    assert np.array_equal((golden["target_frame_inds"] - 2) * 4, golden["audio_inds"])


def test_loader_crop(golden):
    identity = to_model_input(read_image(IDENTITY)[None], torch.device("cpu"), torch.float32)
    assert max_diff(identity, golden["id_input"]) < FEATURE_TOL
    frames = golden["target_frame_inds"][golden["pose_inputs_rows"]]
    order = loop_index(frames, len(POSE_FILES), "pingpong")
    poses = to_model_input(np.stack([read_image(POSE_FILES[i]) for i in order]), torch.device("cpu"), torch.float32)
    assert max_diff(poses, golden["pose_inputs"]) < FEATURE_TOL


@torch.inference_mode()
def test_encoders_and_generator(golden, pipeline):
    nets = pipeline.networks
    pooled, spatial = nets.V(torch.from_numpy(golden["id_input"]))
    assert max_diff(pooled, golden["V_pooled"]) < FEATURE_TOL
    assert max_diff(spatial, golden["V_spatial"]) < FEATURE_TOL
    audio_feature = nets.A_sync(torch.from_numpy(golden["spectrogram_windows"]))
    assert max_diff(audio_feature, golden["A_sync_feature"]) < FEATURE_TOL
    mouth = nets.E.mouth_code_from_audio(audio_feature)
    assert max_diff(mouth, golden["mouth_code"]) < FEATURE_TOL

    order = loop_index(golden["target_frame_inds"], len(POSE_FILES), "pingpong")
    crops = np.stack([read_image(POSE_FILES[i]) for i in order])
    pose_feature = nets.E(to_model_input(crops, torch.device("cpu"), torch.float32))
    assert max_diff(pose_feature, golden["E_feature"]) < FEATURE_TOL
    headpose = nets.E.headpose_code(pose_feature)
    assert max_diff(headpose, golden["headpose_code"]) < FEATURE_TOL

    sel = golden["frames_sel"]
    style = torch.cat([pooled.expand(len(sel), -1), mouth[sel], headpose[sel]], 1)
    assert max_diff(nets.G(spatial, style), golden["driven_sel"]) < FEATURE_TOL
    reference = nets.E.headpose_code(nets.E(torch.from_numpy(golden["id_input"])))
    style = torch.cat([pooled.expand(len(sel), -1), mouth[sel], reference.expand(len(sel), -1)], 1)
    assert max_diff(nets.G(spatial, style), golden["refpose_sel"]) < FEATURE_TOL


@pytest.fixture(scope="module")
def driven(synth_weights):
    """The whole speech_short job through the public API, pose from the kit's frames."""
    return pcavs.generate(
        face=str(IDENTITY), audio=str(INPUTS / "speech_short.wav"), pose=[str(p) for p in POSE_FILES],
        checkpoints=synth_weights, aligned=True, noise="fixed", out=None, device="cpu", progress=False,
    )


def test_generate_matches_reference_frames(driven, golden, short_samples):
    assert driven.faces.dtype == np.uint8
    assert driven.faces.shape == (-(-len(short_samples) // 640), 224, 224, 3)  # every 40 ms of audio
    ours = driven.faces[golden["target_frame_inds"][golden["driven_uint8_rows"]]].astype(int)
    assert np.abs(ours - golden["driven_uint8"].astype(int)).max() <= UINT8_TOL
    assert driven.video is None


@pytest.fixture(scope="module")
def refpose(synth_weights, tmp_path_factory):
    """pose=None (the photo's own pose), stereo speech, the photo given twice."""
    stereo = tmp_path_factory.mktemp("stereo") / "stereo.wav"
    data, rate = sf.read(INPUTS / "speech_short.wav", dtype="int16")
    sf.write(stereo, np.stack([data, data], axis=1), rate)
    return pcavs.generate(
        face=[str(IDENTITY), str(IDENTITY)], audio=stereo, pose=None, checkpoints=synth_weights,
        aligned=True, out=None, device="cpu", progress=False,
    )


def test_reference_pose_stereo_and_averaged_identity(refpose, golden):
    """pose=None uses the photo's own pose; stereo is averaged; two copies of a photo average to that photo."""
    frames = golden["target_frame_inds"][golden["frames_sel"]]
    expected = np.clip((golden["refpose_sel"] + 1) / 2 * 255, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    assert np.abs(refpose.faces[frames].astype(int) - expected.astype(int)).max() <= UINT8_TOL


@pytest.mark.slow  # a minute of compiling
def test_compiled_generator_gives_the_same_frames(synth_weights, pipeline, tmp_path):
    """compile=True (torch.compile of G; the short last batch padded to the compiled shape) keeps the output."""
    speech = tmp_path / "five frames.wav"
    data, rate = sf.read(INPUTS / "speech_short.wav", dtype="float32")
    sf.write(speech, data[: 5 * 640], rate)
    job = dict(face=str(IDENTITY), audio=speech, pose=[str(p) for p in POSE_FILES], aligned=True, out=None,
               progress=False, batch_size=4)
    compiled = pcavs.Pipeline.from_pretrained(synth_weights, device="cpu", compile=True)
    ours, eager = compiled(**job).faces, pipeline(**job).faces
    assert ours.shape == eager.shape == (5, 224, 224, 3)
    assert np.abs(ours.astype(int) - eager.astype(int)).max() <= 1


def test_synthesis_rule_matches_the_kit():
    """tests/pcavs_weights.py gives, tensor for tensor, what the kit's make_weights.py gives."""
    import importlib.util

    kit = require_kit("conformance")
    spec = importlib.util.spec_from_file_location("make_weights", kit / "make_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.load_manifest() == load_manifest()
    for net in NETS:
        theirs, ours = module.synth_state_dict(net), synth_state_dict(net)
        assert list(theirs) == list(ours)
        for key, tensor in theirs.items():
            assert ours[key].dtype == tensor.dtype and torch.equal(ours[key], tensor), f"{net}/{key}"
