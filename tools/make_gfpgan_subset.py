#!/usr/bin/env python3
"""Write tests/data/gfpgan/golden_subset.npz: a compact part of the enhance kit's golden.npz, for face 0.

    python tools/make_gfpgan_subset.py [KIT]      # KIT default ../shared/enhance_conformance

A clone without the kit tests against this file. Each array keeps the kit's name; a slice
is named by a suffix and listed in SLICES, so the test cuts the same part of its own output.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "gfpgan" / "golden_subset.npz"
# name in the subset -> (kit array, index into it); all for input 000000.png
SLICES = {
    "input@strided": ("input", np.s_[0, :, ::16, ::16]),
    "enc_bottleneck": ("enc_bottleneck", np.s_[0]),
    "style_code": ("style_code", np.s_[0]),
    "sft_scale_8": ("sft_scale_8", np.s_[0]),
    "sft_shift_8": ("sft_shift_8", np.s_[0]),
    "sft_scale_16@channels": ("sft_scale_16", np.s_[0, ::4]),
    "sft_shift_16@channels": ("sft_shift_16", np.s_[0, ::4]),
    "aux_rgb_64": ("aux_rgb_64", np.s_[0]),
    "dec_conv1_4": ("dec_conv1_4", np.s_[0]),
    "dec_rgb_64": ("dec_rgb_64", np.s_[0]),
    "restored@centre": ("restored", np.s_[0, :, 224:288, 224:288]),
    "restored@strided": ("restored", np.s_[0, :, ::8, ::8]),
    "restored_bgr_uint8@centre": ("restored_bgr_uint8", np.s_[0, 192:320, 192:320]),
    "restored_bgr_uint8@strided": ("restored_bgr_uint8", np.s_[0, ::4, ::4]),
    "restored_seed0@centre": ("restored_seed0", np.s_[0, :, 224:288, 224:288]),
    "restored_seed0@strided": ("restored_seed0", np.s_[0, :, ::8, ::8]),
}


def main() -> None:
    kit = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "enhance_conformance"
    with np.load(kit / "golden.npz") as golden:
        subset = {name: np.ascontiguousarray(golden[key][index]) for name, (key, index) in SLICES.items()}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **subset)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
