"""SSIM, PSNR and CPBD against independent implementations: scikit-image's SSIM and PSNR, and the `cpbd`
package (the Python port of Narvekar & Karam's code), on real faces made sharper, blurrier and noisier.

Tolerances: SSIM and PSNR 1e-9 (the same sums in another order; measured: 4e-15). CPBD 1e-4 absolute
(measured: at most 2.2e-5 over 128 faces and frames, and most equal): the authors mark edge blocks
with Canny's edges, pcavs with the Sobel edges it measures anyway, which differ only in blocks with
almost no edge.
"""
from __future__ import annotations

import importlib

import cv2
import numpy as np
import pytest
import scipy.ndimage
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pcavs.core.assets import DEMO_FACE
from pcavs.media.video import iter_frames
from pcavs.metrics import quality

from support.kits import DATA, INPUTS

SSIM_PSNR_TOL = 1e-9
CPBD_TOL = 1e-4
pytestmark = pytest.mark.no_weights_env  # no network weights here


def faces() -> dict[str, np.ndarray]:
    """224x224 faces (the kit's photo and pose frames, frames of the SyncNet kit's video) and the 512x512 demo photo."""
    found = {"demo photo": np.asarray(Image.open(DEMO_FACE).convert("RGB"))}
    for path in [INPUTS / "identity" / "000000.png", *sorted((INPUTS / "pose").glob("*.png"))[:2]]:
        found[f"kit {path.parent.name} {path.stem}"] = np.asarray(Image.open(path).convert("RGB"))
    for number, frame in enumerate(iter_frames(DATA / "syncnet" / "sync.mp4")):
        if number in (0, 60):
            found[f"sync.mp4 frame {number}"] = frame
        if number >= 60:
            break
    return found


FACES = faces()
rng = np.random.default_rng(0)


def variants(image: np.ndarray) -> dict[str, np.ndarray]:
    """The image, blurred a little and a lot, sharpened, noisy, and JPEG-compressed."""
    blurred = cv2.GaussianBlur(image, (0, 0), 1.0)
    noisy = np.clip(image.astype(int) + rng.integers(-20, 21, image.shape), 0, 255).astype(np.uint8)
    _, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 30])
    return {
        "as is": image, "blurred": blurred, "very blurred": cv2.GaussianBlur(image, (0, 0), 3.0),
        "sharpened": cv2.addWeighted(image, 2.0, blurred, -1.0, 0), "noisy": noisy, "jpeg 30": cv2.imdecode(jpeg, 1),
    }


@pytest.fixture(scope="module")
def reference_cpbd():
    """`cpbd.compute`. cpbd 1.0.7 (its latest release) imports `scipy.ndimage.imread` for its own command line
    only; SciPy 1.2 removed that function, so a stand-in is put there while the package is imported."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(scipy.ndimage, "imread", None, raising=False)
        return importlib.import_module("cpbd").compute


@pytest.mark.parametrize("name", FACES)
def test_ssim_and_psnr_equal_scikit_images(name):
    image = FACES[name]
    for kind, other in variants(image).items():
        if kind == "as is":
            assert quality.ssim(image, other) == pytest.approx(1.0, abs=SSIM_PSNR_TOL)
            assert quality.psnr(image, other) == float("inf")
            continue
        theirs = structural_similarity(image, other, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                       data_range=255, channel_axis=-1)
        assert abs(quality.ssim(image, other) - theirs) <= SSIM_PSNR_TOL, kind
        assert abs(quality.psnr(image, other) - peak_signal_noise_ratio(image, other, data_range=255)) <= SSIM_PSNR_TOL, kind


@pytest.mark.parametrize("name", FACES)
def test_cpbd_equals_the_cpbd_package(name, reference_cpbd):
    scores = {}
    for kind, image in variants(FACES[name]).items():
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        ours, theirs = quality.cpbd(image), reference_cpbd(grey)
        assert abs(ours - theirs) <= CPBD_TOL, (kind, ours, theirs)
        assert quality.cpbd(grey) == ours  # an RGB image is scored on OpenCV's grey of it
        scores[kind] = ours
    assert scores["very blurred"] < scores["blurred"] < scores["as is"] < scores["sharpened"]  # it measures sharpness
