"""Where the shared conformance kits are, when they are beside the clone.

A user's clone tests against the compact data under tests/data/; CI also has ../shared
(or $PCAVS_SHARED) with the full kits, and sets PCAVS_REQUIRE_KITS=1 so that a missing
kit fails instead of skipping.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
INPUTS = DATA / "pcavs" / "inputs"  # the PC-AVS kit's inputs: an aligned face, 12 aligned pose frames, speech


def kit_path(name: str) -> Path:
    """The folder of one kit (`conformance`, `enhance_conformance`, `syncnet_conformance`), present or not."""
    if name == "conformance" and os.environ.get("PCAVS_CONFORMANCE"):
        return Path(os.environ["PCAVS_CONFORMANCE"])
    return Path(os.environ.get("PCAVS_SHARED", ROOT.parent / "shared")) / name


def require_kit(name: str) -> Path:
    """The kit's folder; skips the test when it is absent (fails instead under PCAVS_REQUIRE_KITS=1)."""
    path = kit_path(name)
    if not (path / "golden.npz").is_file():
        message = f"the {name} kit is not beside the clone (looked in {path})"
        if os.environ.get("PCAVS_REQUIRE_KITS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path
