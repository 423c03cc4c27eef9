"""Shared fixtures: the conformance kit in ../shared, weights synthesized from it once per run, one loaded pipeline."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

CONFORMANCE = Path(__file__).resolve().parents[1].parent / "shared" / "conformance"
INPUTS = CONFORMANCE / "inputs"


def _make_weights_module():
    spec = importlib.util.spec_from_file_location("make_weights", CONFORMANCE / "make_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def make_weights():
    """The kit's make_weights module (synth_state_dict, load_manifest)."""
    assert CONFORMANCE.is_dir(), f"the conformance kit is missing: expected {CONFORMANCE}"
    return _make_weights_module()


@pytest.fixture(scope="session")
def synth_weights(tmp_path_factory, make_weights) -> Path:
    """A checkpoint folder with latest_net_{G,V,E,A_sync}.pth synthesized by the kit's rule."""
    import torch

    folder = tmp_path_factory.mktemp("checkpoints") / "demo"
    folder.mkdir()
    manifest = make_weights.load_manifest()
    for net in ("G", "V", "E", "A_sync"):
        torch.save(make_weights.synth_state_dict(net, manifest), folder / f"latest_net_{net}.pth")
    return folder


@pytest.fixture(scope="session")
def golden() -> dict[str, np.ndarray]:
    with np.load(CONFORMANCE / "golden.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="session")
def pipeline(synth_weights):
    from pcavs import Pipeline

    return Pipeline.from_pretrained(synth_weights, device="cpu")


@pytest.fixture(autouse=True)
def _checkpoints_env(synth_weights, monkeypatch, request, tmp_path):
    """Every test sees the synthesized weights through PCAVS_CHECKPOINTS unless it opts out."""
    if "no_weights_env" not in request.keywords:
        monkeypatch.setenv("PCAVS_CHECKPOINTS", str(synth_weights))
    monkeypatch.setenv("PCAVS_HOME", str(tmp_path / "pcavs-home"))


def pytest_configure(config):
    config.addinivalue_line("markers", "no_weights_env: do not point PCAVS_CHECKPOINTS at the synthesized weights")


@pytest.fixture(scope="session")
def syncnet_file(tmp_path_factory) -> Path:
    """A syncnet_v2.model synthesized by the syncnet_conformance kit's rule (tests/syncnet_weights.py)."""
    import syncnet_weights

    return syncnet_weights.write(tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model")
