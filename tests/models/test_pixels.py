"""One rounding from network output to pixels, checked against both references: GFPGAN's code rounds (we
equal it exactly); PC-AVS's truncates (we are 0 or 1 level above it, half a level on average)."""
import numpy as np
import torch

from pcavs.models.pixels import to_tensor, to_uint8
from support.kits import DATA


def test_equals_gfpgans_rounding():
    with np.load(DATA / "gfpgan" / "golden_subset.npz") as subset:
        # the subset keeps the float output's 64x64 centre (224:288) and every 8th pixel, the uint8 image's
        # 128x128 centre (192:320) and every 4th: the same pixels are [32:96, 32:96] and [::2, ::2] of the latter
        for part, same in (("centre", np.s_[32:96, 32:96]), ("strided", np.s_[::2, ::2])):
            ours = to_uint8(torch.from_numpy(subset[f"restored@{part}"][None]))[0][..., ::-1]
            assert np.array_equal(ours, subset[f"restored_bgr_uint8@{part}"][same]), part


def test_rounds_where_the_pcavs_reference_truncates(golden):
    rows = list(golden["driven_uint8_rows"])
    compared = 0
    for k, frame in enumerate(golden["frames_sel"]):
        if frame not in rows:
            continue
        ours = to_uint8(torch.from_numpy(golden["driven_sel"][k : k + 1]))[0].astype(int)
        truncated = golden["driven_uint8"][rows.index(frame)].astype(int)
        expected = np.clip(np.round((golden["driven_sel"][k].transpose(1, 2, 0) + 1) / 2 * 255), 0, 255)
        assert np.array_equal(ours, expected)
        step = ours - truncated
        assert set(np.unique(step)) <= {0, 1} and 0.4 < step.mean() < 0.6
        compared += 1
    assert compared >= 1


def test_round_trip_and_range():
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    tensor = to_tensor(pixels, torch.device("cpu"), torch.float32)
    assert tensor.shape == (1, 3, 16, 16) and tensor.min() == -1 and tensor.max() == 1
    assert np.array_equal(to_uint8(tensor), pixels)
    assert np.array_equal(to_uint8(torch.tensor([-7.0, 9.0]).view(1, 1, 1, 2).expand(1, 3, 1, 2)), [[[[0] * 3, [255] * 3]]])
