"""Shared fixtures: the conformance data (in tests/data, and the full kit when ../shared is beside the clone),
weights synthesized once per run by the kit's rule, one loaded pipeline.

Slow tests (`@pytest.mark.slow`) run when PCAVS_SLOW=1 (CI sets it); the default run stays short.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from support.kits import DATA, require_kit


@pytest.fixture(scope="session")
def synth_weights(tmp_path_factory) -> Path:
    """A checkpoint folder with latest_net_{G,V,E,A_sync}.pth synthesized by the kit's rule."""
    from support.pcavs_weights import write_checkpoints

    return write_checkpoints(tmp_path_factory.mktemp("checkpoints") / "demo")


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="session", params=["repo", "kit"])
def golden(request) -> dict[str, np.ndarray]:
    """The reference outputs: the compact copy in tests/data, then (when present) every array of the full kit."""
    if request.param == "repo":
        return {**_load(DATA / "pcavs" / "golden_features.npz"), **_load(DATA / "pcavs" / "golden_images.npz")}
    full = _load(require_kit("conformance") / "golden.npz")
    full["driven_uint8_rows"] = np.arange(len(full["driven_uint8"]))
    full["pose_inputs_rows"] = np.arange(len(full["pose_inputs"]))
    return full


@pytest.fixture(scope="session")
def pipeline(synth_weights):
    from pcavs import Pipeline

    return Pipeline.from_pretrained(synth_weights, device="cpu")


@pytest.fixture(autouse=True)
def _checkpoints_env(request, monkeypatch, tmp_path):
    """Tests that use weights see the synthesized ones through PCAVS_CHECKPOINTS unless they opt out;
    every test gets its own empty user cache."""
    monkeypatch.setenv("PCAVS_HOME", str(tmp_path / "pcavs-home"))
    if "no_weights_env" not in request.keywords:
        monkeypatch.setenv("PCAVS_CHECKPOINTS", str(request.getfixturevalue("synth_weights")))


def pytest_configure(config):
    config.addinivalue_line("markers", "no_weights_env: do not point PCAVS_CHECKPOINTS at the synthesized weights")
    config.addinivalue_line("markers", "slow: long; runs when PCAVS_SLOW=1 (as in CI)")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("PCAVS_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set PCAVS_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def gfpgan_checkpoint(tmp_path_factory) -> Path:
    """GFPGANv1.4.pth synthesized once per test run by the enhance kit's rule (tests/gfpgan_weights.py)."""
    from support.gfpgan_weights import write_checkpoint

    return write_checkpoint(tmp_path_factory.mktemp("gfpgan"))


@pytest.fixture(scope="session")
def syncnet_file(tmp_path_factory) -> Path:
    """A syncnet_v2.model synthesized by the syncnet_conformance kit's rule (tests/syncnet_weights.py)."""
    from support import syncnet_weights as syncnet_weights

    return syncnet_weights.write(tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model")
