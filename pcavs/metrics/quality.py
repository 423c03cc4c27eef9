"""Image quality of generated faces: SSIM, PSNR and mouth-landmark distance against the ground truth, and CPBD.

All take 224x224 uint8 RGB face crops, one frame at a time.
- `ssim`: Wang et al. 2004 with an 11-tap Gaussian window (sigma 1.5), K1 0.01, K2 0.03, range 255,
  population (co)variances, the mean over each RGB channel's map without its 5-pixel border, then
  over channels (skimage's `structural_similarity(..., gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=255, channel_axis=-1)` computes the same).
- `psnr`: 10 log10(255^2 / MSE) over all three channels (inf for identical frames).
- `mouth_distance`: mean Euclidean distance of the 40 lip points of pcavs's face mesh
  (outer and inner lip contours), in pixels of the crop.
- `cpbd`: Narvekar & Karam 2011, "A no-reference image blur metric based on the cumulative
  probability of blur detection (CPBD)", IEEE TIP 20(9) (higher is sharper), as the authors'
  code computes it (and the `cpbd` package, its Python port, which the tests compare with). On
  the grey image: the vertical edges of Octave's `edge(..., "sobel")` (the horizontal Sobel
  derivative normalised to sum 1, squared, kept above twice its root mean square, thinned to
  local maxima across rows or columns); 64x64 blocks with more than 0.2% edge pixels are edge
  blocks; in them, each edge's width w (Marziliano et al.: along its row, between the intensity
  extrema on either side) gives P_blur = 1 - exp(-(w / w_JNB)^3.6), with w_JNB = 5 where the
  block's contrast is at most 50 grey levels, else 3; CPBD is the share of edges with P_blur at
  most P_JNB = 63% (probabilities in 1% steps). The authors mark edge blocks with Canny's edges
  instead of Sobel's; the tests bound what that changes.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

SSIM_SIGMA = 1.5
SSIM_TAPS = 11
SSIM_K1, SSIM_K2 = 0.01, 0.03
PEAK = 255.0

# MediaPipe face-mesh points of the lips: the outer contour, then the inner one (20 each).
MESH_LIPS = (
    61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185,
    78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191,
)

# CPBD (Narvekar & Karam 2011)
CPBD_BLOCK = 64  # blocks of 64x64 pixels
CPBD_EDGE_FRACTION = 0.002  # a block is an edge block when more than 0.2% of its pixels are edge pixels
CPBD_BETA = 3.6  # slope of the psychometric function
CPBD_P_JNB = 0.63  # probability of blur detection at the just noticeable blur
CPBD_MAX_STEPS = 100  # how far an edge's width is followed on each side
CPBD_SOBEL = np.array([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]) / 8  # d/dx, absolute values summing to 1


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"need two images of the same (H, W, 3) shape, got {a.shape} and {b.shape}")


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of two RGB images (1.0 when identical)."""
    _check_pair(a, b)
    x, y = a.astype(np.float64), b.astype(np.float64)
    blur = lambda image: cv2.GaussianBlur(image, (SSIM_TAPS, SSIM_TAPS), SSIM_SIGMA)  # noqa: E731
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * PEAK) ** 2, (SSIM_K2 * PEAK) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    border = SSIM_TAPS // 2
    return float(index[border:-border, border:-border].mean())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 RGB images (inf when identical)."""
    _check_pair(a, b)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(PEAK**2 / mse)


def lip_points(mesh: np.ndarray) -> np.ndarray:
    """(40, 2) lip points of a (468, 2+) face mesh."""
    return np.asarray(mesh)[list(MESH_LIPS), :2].astype(np.float64)


def mouth_distance(mesh_a: np.ndarray, mesh_b: np.ndarray) -> float:
    """Mean distance (pixels) between the lip points of two face meshes."""
    return float(np.linalg.norm(lip_points(mesh_a) - lip_points(mesh_b), axis=1).mean())


def luminance(image: np.ndarray) -> np.ndarray:
    """The grey image as float64: a grey image as it is; an RGB uint8 image as OpenCV makes it grey (ITU-R
    BT.601 weights, rounded to whole levels, as `cv2.imread(path, cv2.IMREAD_GRAYSCALE)` reads a colour file)."""
    image = np.asarray(image)
    if image.ndim == 2:
        return image.astype(np.float64)
    return cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY).astype(np.float64)


def edge_map(grey: np.ndarray) -> np.ndarray:
    """Thin vertical edges, as Octave's `edge(grey, "sobel")`: the squared horizontal derivative (mirrored at the
    border) where it exceeds twice its root mean square, kept where it is a local maximum across rows or columns."""
    strength = cv2.filter2D(grey, cv2.CV_64F, CPBD_SOBEL[::-1, ::-1], borderType=cv2.BORDER_REFLECT) ** 2
    strength[strength <= 2 * math.sqrt(strength.mean())] = 0
    padded = np.pad(strength, 1)
    centre = padded[1:-1, 1:-1]
    across_columns = (centre > padded[1:-1, :-2]) & (centre > padded[1:-1, 2:])
    across_rows = (centre > padded[:-2, 1:-1]) & (centre > padded[2:, 1:-1])
    return across_columns | across_rows


def _runs(steps: np.ndarray, reverse: bool) -> np.ndarray:
    """For each column k of `steps` (H, W bool), how many consecutive True values run from k leftwards
    (ending at k), or rightwards (starting at k) when `reverse`."""
    columns = np.arange(steps.shape[1])
    if reverse:
        next_false = np.where(steps, steps.shape[1], columns)
        next_false = np.minimum.accumulate(next_false[:, ::-1], axis=1)[:, ::-1]
        return next_false - columns
    last_false = np.maximum.accumulate(np.where(steps, -1, columns), axis=1)
    return columns - last_false


def edge_widths(grey: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Width (pixels) of each vertical edge (Marziliano et al. 2002): along its row, the distance between the
    intensity extrema on either side of the edge pixel; 0 where there is no such edge.

    Only edge pixels whose gradient points left or right (its angle rounded to a multiple of 45 degrees
    is 0 or 180) are measured, away from the image border. As in the authors' code, a pixel without a
    horizontal gradient counts as pointing right (angle 0).
    """
    height, width = grey.shape
    gy, gx = np.gradient(grey)
    angle = np.degrees(np.arctan2(gy, gx))
    angle[gx == 0] = 0
    quantised = 45 * np.round(angle / 45)
    rising = np.zeros(grey.shape, bool)  # intensity goes up from column k-1 to k
    falling = np.zeros(grey.shape, bool)
    rising[:, 1:] = grey[:, 1:] > grey[:, :-1]
    falling[:, 1:] = grey[:, 1:] < grey[:, :-1]
    out = np.zeros(grey.shape)
    inner = np.zeros(grey.shape, bool)
    inner[1:-1, 1:-1] = True
    for direction, steps in ((0, rising), (180, falling)):
        chosen = edges & inner & ((quantised == direction) | (quantised == -direction))
        rows, cols = np.nonzero(chosen)
        if rows.size == 0:
            continue
        back = _runs(steps, reverse=False)  # runs ending at k, walking left
        ahead = _runs(steps, reverse=True)  # runs starting at k, walking right
        left = np.minimum(back[rows, cols - 1], CPBD_MAX_STEPS) + 1
        right_start = cols + 2
        right = np.ones_like(cols)
        inside = right_start < width
        right[inside] = np.minimum(ahead[rows[inside], right_start[inside]], CPBD_MAX_STEPS) + 1
        out[rows, cols] = left + right
    return out


def cpbd(image: np.ndarray) -> float:
    """CPBD sharpness of an RGB (or grey) image in [0, 1]: the share of edges whose probability of blur
    detection stays at or under the just-noticeable 63%. NaN when the image has no edge block."""
    grey = luminance(image)
    edges = edge_map(grey)
    widths = edge_widths(grey, edges)
    probabilities = []
    rows, cols = grey.shape[0] // CPBD_BLOCK, grey.shape[1] // CPBD_BLOCK
    for i in range(rows):
        for j in range(cols):
            block = (slice(i * CPBD_BLOCK, (i + 1) * CPBD_BLOCK), slice(j * CPBD_BLOCK, (j + 1) * CPBD_BLOCK))
            if np.count_nonzero(edges[block]) <= CPBD_EDGE_FRACTION * CPBD_BLOCK * CPBD_BLOCK:
                continue
            contrast = math.floor(grey[block].max() - grey[block].min())
            width_jnb = 5.0 if contrast <= 50 else 3.0
            found = widths[block][widths[block] > 0]
            probabilities.append(1.0 - np.exp(-np.abs(found / width_jnb) ** CPBD_BETA))
    if not probabilities:
        return math.nan
    everything = np.concatenate(probabilities)
    if everything.size == 0:
        return math.nan
    return float(np.mean(np.round(everything * 100) <= round(CPBD_P_JNB * 100)))
