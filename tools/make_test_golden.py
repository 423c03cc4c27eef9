"""Write tests/data/pcavs/golden_*.npz: the compact part of the conformance kit's golden.npz that
a clone without ../shared tests against. Run from the repository root: python tools/make_test_golden.py [KIT]"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "pcavs"
FEATURES = ("mel", "target_frame_inds", "audio_inds", "spectrogram_windows", "V_pooled", "V_spatial",
            "A_sync_feature", "E_feature", "headpose_code", "mouth_code")
UINT8_ROWS = np.array([0, 7, 14, 21, 28])  # of the 29 pose-driven frames
POSE_ROWS = np.array([0, 5])  # of the 12 loader-cropped pose frames


def main() -> None:
    kit = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "conformance"
    with np.load(kit / "golden.npz") as golden:
        sel = golden["frames_sel"][:1]  # one generated frame per pose mode
        features = {key: golden[key] for key in FEATURES}
        features.update(frames_sel=sel, driven_uint8_rows=UINT8_ROWS, driven_uint8=golden["driven_uint8"][UINT8_ROWS])
        images = dict(id_input=golden["id_input"], pose_inputs_rows=POSE_ROWS, pose_inputs=golden["pose_inputs"][POSE_ROWS],
                      driven_sel=golden["driven_sel"][:1], refpose_sel=golden["refpose_sel"][:1])
    np.savez_compressed(OUT / "golden_features.npz", **features)
    np.savez_compressed(OUT / "golden_images.npz", **images)
    for name in ("golden_features.npz", "golden_images.npz"):
        print(f"{OUT / name}: {(OUT / name).stat().st_size / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
