"""GFPGAN v1.4 restoration: the checkpoint loader, the golden arrays of the enhance kit, the FFHQ frame geometry."""
from __future__ import annotations

import importlib.util
import pickle
from collections import defaultdict

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from support.gfpgan_weights import FILENAME, synth_state_dict, write_checkpoint
from support.kits import DATA, INPUTS, require_kit
from pcavs.faces import ffhq
from pcavs.restore.restorer import Restorer
from pcavs.models.registry import GFPGAN as WEIGHTS, find
from pcavs.restore.weights import check_state_dict, load_gfpgan, read_checkpoint, verify_checkpoint
from pcavs.core.errors import InputError, WeightsError
from pcavs.restore.gfpgan import unused_shapes

# What the README states. Measured on a 2-core AVX2 CPU in NCHW: every float array within 5.5e-6 (the repository's
# subset 5.1e-6), the uint8 faces within 1 level (0.004% of values). Channels-last convolutions sum in another order:
# 1.4e-5 on an AVX-512 CPU. The kit's own limits are 1e-3 and 2 levels.
FEATURE_TOL = 5e-5
UINT8_TOL = 1
SUBSET = DATA / "gfpgan" / "golden_subset.npz"
INPUT_0 = DATA / "gfpgan" / "input_000000.png"
# S and its inverse as the kit's README states them
S = np.array([[2.27410481, 0.01178889, 0.71809645], [-0.01178889, 2.27410481, 104.71520293]])
S_INV = np.array([[0.43972165, -0.00227950, -0.07706387], [0.00227950, 0.43972165, -46.04717908]])
N_TENSORS, N_VALUES = 285, 87_143_276


def read_rgb(path) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1])


@pytest.fixture(scope="module")
def checkpoint(gfpgan_checkpoint):
    return gfpgan_checkpoint


@pytest.fixture(scope="module")
def restorer(checkpoint):
    return Restorer.from_pretrained(checkpoint, device="cpu")


def run_with_taps(restorer: Restorer, faces: np.ndarray, raw: dict, **options) -> tuple[dict, np.ndarray]:
    """Restore `faces` through the public API and record the kit's intermediate arrays on the way (every batch)."""
    net = restorer.net
    dec = net.stylegan_decoder
    taps = defaultdict(list)
    points = {
        "enc_bottleneck": (net.final_conv, lambda x, o: F.leaky_relu(o, 0.2)),
        "style_code": (net.final_linear, lambda x, o: o.view(-1, 16, 512)),
        "sft_scale_8": (net.condition_scale[0], None), "sft_shift_8": (net.condition_shift[0], None),
        "sft_scale_16": (net.condition_scale[1], None), "sft_shift_16": (net.condition_shift[1], None),
        "aux_rgb_64": (net.conv_body_up[3], lambda x, o: F.conv2d(o, raw["toRGB.3.weight"], raw["toRGB.3.bias"])),
        "dec_conv1_4": (dec.style_conv1, None), "dec_rgb_64": (dec.to_rgbs[3], None),
        "input": (net, lambda x, o: x[0]), "restored": (net, None),
    }
    hooks = []
    for name, (module, pick) in points.items():
        def hook(module, args, out, name=name, pick=pick):
            taps[name].append((pick(args, out) if pick else out).detach().clone())
        hooks.append(module.register_forward_hook(hook))
    try:
        restored = restorer(faces, **options)
    finally:
        for handle in hooks:
            handle.remove()
    return {name: torch.cat(values).numpy() for name, values in taps.items()}, restored


def max_diff(ours: np.ndarray, theirs: np.ndarray) -> float:
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    return float(np.abs(ours.astype(np.float64) - theirs.astype(np.float64)).max())


# ---------------------------------------------------------------- the checkpoint


def test_synthesized_weights_equal_the_kits():
    kit = require_kit("enhance_conformance")
    spec = importlib.util.spec_from_file_location("enhance_make_weights", kit / "make_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    theirs, ours = module.synth_state_dict(), synth_state_dict()
    assert list(ours) == list(theirs)
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key
    assert (DATA / "gfpgan" / "manifest.json").read_text() == (kit / "manifest.json").read_text()


def test_loads_strictly_and_drops_what_restoration_never_reads(checkpoint):
    state = read_checkpoint(checkpoint)
    assert len(state) == N_TENSORS and sum(t.numel() for t in state.values()) == N_VALUES
    net = load_gfpgan(checkpoint)
    kept = net.state_dict()
    assert set(kept) == set(state) - set(unused_shapes())
    assert not any(k.startswith(("toRGB.", "stylegan_decoder.style_mlp.")) for k in kept)
    for key, value in kept.items():
        assert torch.equal(value, state[key]), key
    assert len(unused_shapes()) == 30 and all(b in kept for b in (f"stylegan_decoder.noises.noise{i}" for i in range(15)))


@pytest.mark.parametrize("legacy, container", [(True, "params_ema"), (False, "params")])
def test_legacy_format_and_params_container(tmp_path, checkpoint, legacy, container):
    path = write_checkpoint(tmp_path, legacy=legacy, container=container)
    with open(path, "rb") as handle:
        assert (handle.read(2) == b"PK") is not legacy
    ours, reference = load_gfpgan(path).state_dict(), load_gfpgan(checkpoint).state_dict()
    assert all(torch.equal(ours[k], reference[k]) for k in reference)


def test_refuses_files_that_are_not_gfpgan_v14(tmp_path):
    state = {key: torch.zeros(shape) for key, shape in _expected_shapes().items()}
    check_state_dict(state, "ok.pth")  # the right keys and shapes pass
    with pytest.raises(WeightsError, match=r"bad\.pth: key 'final_linear.weight' .*expected \(8192, 4096\)"):
        check_state_dict({**state, "final_linear.weight": torch.zeros(8192, 4095)}, "bad.pth")
    with pytest.raises(WeightsError, match=r"missing key 'toRGB.0.weight'"):
        check_state_dict({k: v for k, v in state.items() if k != "toRGB.0.weight"}, "bad.pth")
    with pytest.raises(WeightsError, match=r"unexpected key 'extra'"):
        check_state_dict({**state, "extra": torch.zeros(1)}, "bad.pth")

    cases = {
        "pcavs.pth": {"conv1.weight": torch.zeros(2)},  # a plain state dict: no container
        "other_container.pth": {"state_dict": {"a": torch.zeros(1)}},
        "wrong_net.pth": {"params_ema": {"conv_first.weight": torch.zeros(64, 3, 3, 3)}},
    }
    for name, obj in cases.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(WeightsError, match=rf"^{tmp_path / name}: .*pcavs download gfpgan"):
            load_gfpgan(tmp_path / name)
    (tmp_path / "unsafe.pth").write_bytes(pickle.dumps({"params_ema": _NotATensor()}, protocol=2))
    (tmp_path / "truncated.pth").write_bytes((tmp_path / "wrong_net.pth").read_bytes()[:200])
    (tmp_path / "text.pth").write_text("<html>not found</html>")
    for name, reason in (("unsafe.pth", "weights_only"), ("truncated.pth", "truncated"), ("text.pth", "not a PyTorch checkpoint")):
        with pytest.raises(WeightsError, match=rf"{name}: .*{reason}"):
            verify_checkpoint(tmp_path / name)
    with pytest.raises(WeightsError, match="file not found"):
        load_gfpgan(tmp_path / "absent.pth")


class _NotATensor:
    pass


def _expected_shapes() -> dict:
    from pcavs.restore.gfpgan import GFPGAN

    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in GFPGAN().state_dict().items()}
    return {**shapes, **unused_shapes()}


def test_finds_the_checkpoint_argument_then_env_then_cache(tmp_path, monkeypatch):
    monkeypatch.delenv(WEIGHTS.env, raising=False)
    with pytest.raises(WeightsError) as error:
        find("gfpgan")
    message = str(error.value)
    cached = WEIGHTS.default_path()
    assert "\n" not in message and str(cached) in message and "pcavs download gfpgan" in message
    assert cached.is_relative_to(tmp_path / "pcavs-home")  # conftest points PCAVS_HOME there

    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert find("gfpgan") == cached
    env_folder = tmp_path / "env"
    env_folder.mkdir()
    monkeypatch.setenv(WEIGHTS.env, str(env_folder))
    with pytest.raises(WeightsError, match=rf"env/{FILENAME} \(\$PCAVS_GFPGAN\): file not found; .*or unset \$PCAVS_GFPGAN"):
        find("gfpgan")  # $PCAVS_GFPGAN holds no file: an error naming it, not the cache
    (env_folder / FILENAME).write_bytes(b"x")
    assert find("gfpgan") == env_folder / FILENAME
    given = tmp_path / "given.pth"
    given.write_bytes(b"x")
    assert find("gfpgan", given) == given
    with pytest.raises(WeightsError, match=rf"{tmp_path / 'nowhere.pth'}: no such file or folder; run `pcavs download gfpgan`"):
        find("gfpgan", tmp_path / "nowhere.pth")  # an explicit path is the only place looked


# ---------------------------------------------------------------- golden arrays


@pytest.fixture(scope="module")
def subset():
    with np.load(SUBSET) as data:
        return {name: data[name] for name in data.files}


def _cut(arrays: dict, name: str) -> np.ndarray:
    """Our array for a subset entry: the kit's name, and the part the subset keeps (see tools/make_gfpgan_subset.py)."""
    key, _, part = name.partition("@")
    value = arrays[key][0]
    centre = slice(192, 320) if key == "restored_bgr_uint8" else slice(224, 288)
    if part == "strided":
        step = {"input": 16, "restored_bgr_uint8": 4}.get(key, 8)
        return value[..., ::step, ::step] if key != "restored_bgr_uint8" else value[::step, ::step]
    if part == "centre":
        return value[..., centre, centre] if key != "restored_bgr_uint8" else value[centre, centre]
    if part == "channels":
        return value[::4]
    return value


def test_golden_subset_in_the_repository(restorer, checkpoint, subset):
    """A fresh clone's check: face 0 of the kit, with the stored noise and with seeded random noise."""
    face, raw = read_rgb(INPUT_0)[None], read_checkpoint(checkpoint)
    arrays, restored = run_with_taps(restorer, face, raw)
    arrays["restored_bgr_uint8"] = restored[..., ::-1]
    arrays["restored_seed0"] = run_with_taps(restorer, face, raw, noise="random", seed=0)[0]["restored"]
    for name, expected in subset.items():
        tol = UINT8_TOL if expected.dtype == np.uint8 else FEATURE_TOL
        assert max_diff(_cut(arrays, name), expected) <= tol, name


@pytest.mark.slow
def test_every_golden_array_of_the_kit(restorer, checkpoint):
    kit = require_kit("enhance_conformance")
    with np.load(kit / "golden.npz") as data:
        golden = {name: data[name] for name in data.files}
    faces = np.stack([read_rgb(p) for p in sorted((kit / "inputs").glob("*.png"))])
    arrays, restored = run_with_taps(restorer, faces, read_checkpoint(checkpoint), batch_size=3)  # batches of 3 and 1
    arrays["restored_bgr_uint8"] = restored[..., ::-1]
    seeded, _ = run_with_taps(restorer, faces[:1], read_checkpoint(checkpoint), noise="random", seed=0)
    arrays["restored_seed0"] = seeded["restored"]
    assert max_diff(arrays["input"], golden["input"]) == 0
    for name in golden:
        if name in ("sources", "similarity"):
            continue
        tol = UINT8_TOL if golden[name].dtype == np.uint8 else FEATURE_TOL
        assert max_diff(arrays[name], golden[name]) <= tol, name
    assert np.allclose(golden["similarity"], ffhq.crop_to_ffhq(), atol=1e-12)


def test_out_of_memory_splits_the_batch_down_to_one_face(restorer, subset, monkeypatch):
    """An injected device out-of-memory error for batches over one face: the batch of 2 is split, the size that fit
    is kept, and each face is restored as the kit's golden face 0 is."""
    restorer = Restorer(restorer.net, restorer.device)  # the loaded network, with batches of its own
    tried = []
    forward = restorer.net.forward

    def small_device(faces, *args, **kwargs):
        tried.append(len(faces))
        if len(faces) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB (injected)")
        return forward(faces, *args, **kwargs)

    monkeypatch.setattr(restorer.net, "forward", small_device)
    restored = restorer(np.stack([read_rgb(INPUT_0)] * 2), batch_size=2)
    assert tried == [2, 1, 1] and restorer.batches.limit == 1
    assert np.array_equal(restored[0], restored[1])
    for name, expected in subset.items():
        if name.startswith("restored_bgr_uint8"):
            assert max_diff(_cut({"restored_bgr_uint8": restored[:1, ..., ::-1]}, name), expected) <= UINT8_TOL, name


def test_restorer_checks_its_input(restorer):
    for bad in (np.zeros((512, 512, 3), np.uint8), np.zeros((1, 224, 224, 3), np.uint8), np.zeros((1, 512, 512, 3))):
        with pytest.raises(InputError, match="faces: expected"):
            restorer(bad)
    with pytest.raises(InputError, match="noise"):
        restorer(np.zeros((1, 512, 512, 3), np.uint8), noise="fresh")
    assert restorer(np.zeros((0, 512, 512, 3), np.uint8)).shape == (0, 512, 512, 3)


# ---------------------------------------------------------------- the FFHQ frame


def test_crop_to_ffhq_is_the_kits_similarity():
    assert np.abs(ffhq.crop_to_ffhq() - S).max() < 1e-7
    assert np.abs(cv2.invertAffineTransform(ffhq.crop_to_ffhq()) - S_INV).max() < 1e-7
    # the frame reaches 46 crop pixels above the crop; the crop's bottom 44 rows fall outside it
    top, bottom = ffhq.transform_points(S_INV, np.array([[0.0, 0.0], [0.0, 512.0]]))[:, 1]
    assert round(top) == -46 and 224 - np.ceil(bottom) == 44


def test_warp_from_a_photo_reproduces_the_kit_inputs():
    """The kit's input 0 is the PC-AVS kit's aligned face warped by S (bicubic, facexlib's grey outside); a photo
    holding that crop at a known place gives the same face through S after the photo -> crop similarity."""
    source, expected = read_rgb(INPUTS / "identity" / "000000.png"), read_rgb(INPUT_0)
    assert np.array_equal(ffhq.warp_to_ffhq(source, ffhq.crop_to_ffhq()), expected)
    photo = np.full((700, 900, 3), 60, np.uint8)
    photo[250:474, 300:524] = source  # photo -> crop: a shift by (-300, -250)
    to_crop = np.array([[1.0, 0.0, -300.0], [0.0, 1.0, -250.0]])
    face = ffhq.warp_to_ffhq(photo, ffhq.photo_to_ffhq(to_crop))
    inside = ffhq.warp_affine(np.full((224, 224), 255, np.uint8), S, (512, 512)) == 255
    inside = cv2.erode(inside.astype(np.uint8), np.ones((11, 11), np.uint8)) > 0  # beyond the bicubic kernel's reach
    assert np.abs(face[inside].astype(int) - expected[inside]).max() <= 1  # OpenCV's fixed-point coordinates
    assert (face[:60] == 60).all()  # above the crop: the photo, not grey


def test_paste_back_touches_only_the_frames_footprint():
    rng = np.random.default_rng(0)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (1080, 1920, 3), np.uint8), (0, 0), 4)
    to_crop = np.array([[0.3, 0.0, -200.0], [0.0, 0.3, -60.0]])  # a face about 400 px wide
    matrix = ffhq.photo_to_ffhq(to_crop)
    face = ffhq.warp_to_ffhq(frame, matrix)
    paster = ffhq.FfhqPaster(frame.shape[:2], matrix)
    pasted = paster(frame, np.full_like(face, 255))
    inverse = cv2.invertAffineTransform(matrix)
    corners = ffhq.transform_points(inverse, np.array([[0, 0], [511, 0], [0, 511], [511, 511]], np.float64))
    (x0, y0), (x1, y1) = np.floor(corners.min(0)).astype(int) - 1, np.ceil(corners.max(0)).astype(int) + 2
    outside = np.ones((1080, 1920), bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(pasted[outside], frame[outside])
    assert (pasted[outside] != 255).any() and not np.array_equal(pasted, frame)
    centre = np.rint(ffhq.transform_points(inverse, np.array([[256.0, 256.0]]))[0]).astype(int)
    assert (pasted[centre[1], centre[0]] == 255).all()  # the mask is 1 in the middle
    assert np.array_equal(ffhq.FfhqPaster(frame.shape[:2], matrix, weight=0.0)(frame, face), frame)
    half = ffhq.FfhqPaster(frame.shape[:2], matrix, weight=0.5)(frame, np.full_like(face, 255))
    expected = np.rint(frame[centre[1], centre[0]] / 2 + 127.5)
    assert np.abs(half[centre[1], centre[0]] - expected).max() <= 1
    # the frame's own face pasted back is the frame, up to resampling twice
    assert np.abs(paster(frame, face).astype(int) - frame).max() <= 6
    mask = ffhq.ffhq_mask()
    assert mask[256, 256] == 1.0 and (mask[0] == 0).all() and (mask[:, -1] == 0).all()
