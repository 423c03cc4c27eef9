#!/usr/bin/env python3
"""Write tests/data/syncnet/: the compact golden subset of the syncnet_conformance kit, and its two mp4 inputs.

    python tools/make_syncnet_data.py [KIT]      # KIT defaults to ../shared/syncnet_conformance

Kept for the `sync` and `delay3` cases (the mp4s through ffmpeg): every score array
(dists, mdist, fdist, fconf, fconfm, minval, conf, offset, min_length, num_windows) and the MFCC
in full; six rows of each embedding; and, for the arrays the kit says must match exactly (the
decoded frames, the first video batch, the audio samples), their SHA-256. For `raw` (whose PNG
inputs are too big to ship) only the scalars and mdist, for the record.
"""
from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "syncnet"
EMBEDDING_ROWS = np.array([0, 1, 19, 20, 77, 153])  # both ends and both sides of the first batch boundary
SCORES = ("dists", "mdist", "fdist", "fconf", "fconfm", "minval", "conf", "offset", "min_length", "num_windows")


def digest(array: np.ndarray) -> np.ndarray:
    return np.array(hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest())


def main() -> None:
    kit = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "syncnet_conformance"
    with np.load(kit / "golden.npz") as golden:
        subset = {"embedding_rows": EMBEDDING_ROWS}
        for case in ("sync", "delay3"):
            for name in SCORES + ("mfcc",):
                subset[f"{case}_{name}"] = golden[f"{case}_{name}"]
            for name in ("im_feat", "cc_feat"):
                subset[f"{case}_{name}_rows"] = golden[f"{case}_{name}"][EMBEDDING_ROWS]
            subset[f"{case}_audio_sha256"] = digest(golden[f"{case}_audio"])
            subset[f"{case}_audio_length"] = np.array(len(golden[f"{case}_audio"]))
        subset["sync_frames_sha256"] = digest(golden["sync_frames"])
        subset["sync_im_batch0_sha256"] = digest(golden["sync_im_batch0"])
        for name in ("minval", "conf", "offset", "mdist"):
            subset[f"raw_{name}"] = golden[f"raw_{name}"]
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / "golden_compact.npz", **subset)
    for name in ("sync.mp4", "delay3.mp4"):
        shutil.copyfile(kit / "inputs" / name, OUT / name)
    shutil.copyfile(kit / "manifest.json", OUT / "manifest.json")
    for path in sorted(OUT.iterdir()):
        print(f"{path.relative_to(ROOT)}  {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
