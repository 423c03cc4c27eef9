"""Strict checkpoint loading: every way a weights file can be wrong gives one line naming the file."""
from __future__ import annotations

import pickle
import shutil
from collections import OrderedDict

import pytest
import torch

from pcavs.models import weights
from pcavs.models.checkpoint import read_state_dict
from pcavs.core.errors import WeightsError
from support.pcavs_weights import synth_state_dict


@pytest.fixture(scope="module")
def audio_state():
    return synth_state_dict("A_sync")


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_loads_strictly_and_drops_unused(pipeline, synth_weights):
    nets = pipeline.networks
    assert not hasattr(nets.G, "style") and not hasattr(nets.V, "fc") and not hasattr(nets.E, "classifier")
    full = sum(t.numel() for net in weights.NETWORKS for t in read_state_dict(synth_weights / weights.checkpoint_filename(net), net, "").values())
    dropped = sum(torch.Size(s).numel() for net in weights.NETWORKS for s in weights.unused_shapes(net).values())
    assert nets.parameter_count == full - dropped
    assert dropped > 52_000_000  # the generator's mapping MLP alone is 52.4 M


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda sd: sd.pop("model.layer4.2.conv2.weight"), "missing key 'model.layer4.2.conv2.weight'"),
        (lambda sd: sd.__setitem__("model.extra.weight", torch.zeros(3)), "unexpected key 'model.extra.weight'"),
        (lambda sd: sd.__setitem__("model.fc.weight", torch.zeros(512, 100)), "key 'model.fc.weight' has shape (512, 100)"),
        (lambda sd: sd.__setitem__("fc.weight", torch.zeros(10, 512)), "key 'fc.weight' has shape (10, 512)"),
    ],
)
def test_wrong_keys_name_file_and_key(tmp_path, audio_state, change, message):
    state = OrderedDict(audio_state)
    change(state)
    path = tmp_path / "latest_net_A_sync.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as exc:
        weights.load_checkpoint_file("A_sync", path)
    assert message in one_line(exc) and str(path) in str(exc.value)


def test_truncated_file(tmp_path, synth_weights):
    path = tmp_path / "latest_net_A_sync.pth"
    data = (synth_weights / "latest_net_A_sync.pth").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError) as exc:
        weights.load_checkpoint_file("A_sync", path)
    assert "truncated" in one_line(exc) and str(path) in str(exc.value)


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("save", [
    lambda obj, path: torch.save(obj, path),
    lambda obj, path: torch.save(obj, path, _use_new_zipfile_serialization=False),
    lambda obj, path: path.write_bytes(pickle.dumps(obj)),
], ids=["zip", "legacy", "plain-pickle"])
def test_unsafe_pickle_is_refused(tmp_path, capsys, save):
    path = tmp_path / "latest_net_A_sync.pth"
    save({"x": Payload()}, path)
    with pytest.raises(WeightsError) as exc:
        weights.load_checkpoint_file("A_sync", path)
    assert "never loads them unsafely" in one_line(exc)
    assert "this must never run" not in capsys.readouterr().out


def test_legacy_format_checkpoint_loads(tmp_path, audio_state):
    """Checkpoints saved by PyTorch < 1.6 (not zip files) load too, still with weights_only=True."""
    path = tmp_path / "latest_net_A_sync.pth"
    torch.save(audio_state, path, _use_new_zipfile_serialization=False)
    module = weights.load_checkpoint_file("A_sync", path)
    key = next(iter(module.state_dict()))
    assert torch.equal(module.state_dict()[key], audio_state[key].float())


def test_checkpoint_of_another_model(tmp_path, synth_weights):
    path = tmp_path / "latest_net_A_sync.pth"
    shutil.copy(synth_weights / "latest_net_E.pth", path)
    with pytest.raises(WeightsError, match="not a PC-AVS A_sync checkpoint"):
        weights.load_checkpoint_file("A_sync", path)


def test_missing_folder_and_file(tmp_path, monkeypatch):
    with pytest.raises(WeightsError, match="nowhere: no such file or folder; run `pcavs download`"):
        weights.load_networks(tmp_path / "nowhere")
    (tmp_path / "partial").mkdir()
    with pytest.raises(WeightsError, match="partial/latest_net_G.pth: file not found; run `pcavs download`"):
        weights.load_networks(tmp_path / "partial")


@pytest.mark.no_weights_env
def test_search_order_and_message(tmp_path, monkeypatch, synth_weights):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PCAVS_CHECKPOINTS", raising=False)
    with pytest.raises(WeightsError) as exc:
        weights.find_checkpoints()
    text = one_line(exc)
    assert "checkpoints/demo" in text and "pcavs-home" in text and "pcavs download" in text
    monkeypatch.setenv("PCAVS_CHECKPOINTS", str(synth_weights))
    assert weights.find_checkpoints() == synth_weights
    assert weights.find_checkpoints(synth_weights) == synth_weights
    with pytest.raises(WeightsError, match="explicit: no such file or folder"):  # a path given must hold the weights
        weights.find_checkpoints(tmp_path / "explicit")


def test_slim_safetensors_round_trip(tmp_path, pipeline, synth_weights):
    slim = weights.save_slim(pipeline.networks, tmp_path / "pcavs.safetensors")
    loaded = weights.load_networks(slim)
    for net in weights.NETWORKS:
        ours, theirs = getattr(loaded, net).state_dict(), getattr(pipeline.networks, net).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert slim.stat().st_size < sum(p.stat().st_size for p in synth_weights.iterdir())
    truncated = tmp_path / "bad.safetensors"
    truncated.write_bytes(slim.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="bad.safetensors"):
        weights.load_networks(truncated)


def test_cli_convert_to_float16_slim_file(tmp_path, synth_weights):
    from pcavs import Pipeline
    from pcavs.app.cli import main

    out = tmp_path / "pcavs_fp16.safetensors"
    assert main(["convert", "--checkpoints", str(synth_weights), "--out", str(out), "--dtype", "float16"]) == 0
    pipe = Pipeline.from_pretrained(out, device="cpu")
    assert pipe.networks.G.conv1.conv.weight.dtype == torch.float32
    assert out.stat().st_size < 0.3 * sum(p.stat().st_size for p in synth_weights.iterdir())
