"""Faces and their three alignment anchors, offline.

Every backend is a `Detector`: `detect(rgb_image) -> list[Face]`, largest face first, each
with its box, a score, and the three anchors of spec §2 in image pixels (x, y): the centre
of the subject's right eye, of the left eye, and of the inner mouth. `get_detector(name)`
picks one:

- `litert` (default): MediaPipe's BlazeFace detectors and 468-point face mesh
  (`pcavs/assets/*.tflite`, Apache-2.0, from the mediapipe 0.10.21 wheel), run by Google's
  LiteRT interpreter. The SSD decoding and the mesh's crop and rotation are done here.
- `mediapipe`: the same mesh through the `mediapipe` package's face-mesh solution
  (`pip install pcavs[mediapipe]`; mediapipe 0.10.21 or older, later releases dropped it).
- `face_alignment`: the reference's FAN 68-point landmarks (`pip install pcavs[fan]`;
  downloads its models on first use).

Anchors. The spec defines each anchor as the mean of 68-point landmarks: right eye 36-41,
left eye 42-47, inner mouth 60-67. From the mesh we take the mean of the mesh points at the
same places, point for point (see MESH_* below): each eye's two corners and two points on
each lid, and the inner lip's two corners and three points on each lip. tests/faces/test_detect.py
checks that these sit where the names say, and that re-aligning the conformance kit's crop
(aligned to the spec's targets) gives back a near-identity transform.

Coordinates follow OpenCV: pixel centres at integers.
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import threading
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import cv2
import numpy as np

from ..core.assets import model_file
from ..core.errors import InputError
from ..media.images import warp_affine

# Mesh points (MediaPipe's canonical 468-point topology) standing in for 68-point landmarks.
# "Right" is the subject's right: on the image's left in a photo of someone facing the camera.
MESH_RIGHT_EYE = (33, 160, 158, 133, 153, 144)  # 68-point 36 outer corner, 37-38 upper lid, 39 inner corner, 40-41 lower lid
MESH_LEFT_EYE = (362, 385, 387, 263, 373, 380)  # 42 inner corner, 43-44 upper lid, 45 outer corner, 46-47 lower lid
MESH_INNER_MOUTH = (78, 82, 13, 312, 308, 317, 14, 87)  # 60 right corner, 61-63 upper lip, 64 left corner, 65-67 lower lip
FAN_RIGHT_EYE, FAN_LEFT_EYE, FAN_INNER_MOUTH = range(36, 42), range(42, 48), range(60, 68)
MESH_EYE_CORNERS = (33, 263)  # outer corners, for the mesh ROI's rotation

DETECT_MAX_SIDE = 1280  # tiles for small faces are cut from the image seen at most this large
MIN_SCORE = 0.5  # BlazeFace score (after the sigmoid) for a candidate face
MIN_PRESENCE = 0.5  # face-mesh presence score for a face to count
NMS_IOU = 0.3
ZOOM = 2.0  # second look: a square ZOOM times the candidate's box, seen by the short-range model
TILES = 3  # when the whole image shows no face: TILES x TILES overlapping tiles, each half the long side
MAX_CANDIDATES = 10
BORDER_PAD = 0.25  # when no face is found: look again with the image mirrored out by this fraction on each side
MESH_SIZE = 192
ROI_SCALE = 1.5  # the mesh sees a square 1.5x the face box, turned so the eyes are level
RELEVEL = 3.0  # degrees: when the mesh's eye line and the detector's differ by more, the mesh runs again
SAME_FACE = 0.3  # two results whose anchors differ by less than this many eye distances are one face


@dataclass(frozen=True)
class Face:
    box: np.ndarray  # (4,) x0, y0, x1, y1 in image pixels
    score: float
    anchors: np.ndarray  # (3, 2) float64 (x, y): subject's right-eye centre, left-eye centre, inner-mouth centre


class Detector(Protocol):
    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an HxWx3 uint8 RGB image, largest first."""


def anchors_from_mesh(mesh: np.ndarray) -> np.ndarray:
    """(468, 2+) mesh points -> the three anchors (3, 2)."""
    groups = (MESH_RIGHT_EYE, MESH_LEFT_EYE, MESH_INNER_MOUTH)
    return np.stack([mesh[list(g), :2].mean(axis=0) for g in groups]).astype(np.float64)


def anchors_from_68(points: np.ndarray) -> np.ndarray:
    """(68, 2+) landmarks -> the three anchors (3, 2), as the spec defines them."""
    groups = (FAN_RIGHT_EYE, FAN_LEFT_EYE, FAN_INNER_MOUTH)
    return np.stack([points[list(g), :2].mean(axis=0) for g in groups]).astype(np.float64)


def anchor_spread(anchors: np.ndarray) -> float:
    """Root-mean-square distance of the anchors from their centroid: proportional to the face's size."""
    anchors = np.asarray(anchors, np.float64)
    return float(np.sqrt(((anchors - anchors.mean(0)) ** 2).sum(1).mean()))


def largest_first(faces: list[Face]) -> list[Face]:
    """Faces sorted by size (from their anchors, so every backend ranks alike), one per person."""
    return [faces[i] for i in _ranking([face.anchors for face in faces])]


def _ranking(anchors: list[np.ndarray]) -> list[int]:
    """Indices of faces, largest first, leaving out any that repeats a larger one (same place)."""
    kept: list[int] = []
    for i in sorted(range(len(anchors)), key=lambda i: -anchor_spread(anchors[i])):
        eyes = np.linalg.norm(anchors[i][1] - anchors[i][0])
        if all(np.linalg.norm(anchors[i] - anchors[k], axis=1).mean() > SAME_FACE * eyes for k in kept):
            kept.append(i)
    return kept


# ---------------------------------------------------------------- LiteRT backend


class _Hit(NamedTuple):
    """One BlazeFace detection, in the pixels of the image it was found in."""

    score: float
    box: np.ndarray  # (4,) x0, y0, x1, y1
    keypoints: np.ndarray  # (6, 2): right eye, left eye, nose tip, mouth, right ear, left ear

    def moved(self, to_image: np.ndarray) -> "_Hit":
        """The hit in another image, given the 2x3 affine from this image to that one (scale and shift only)."""
        corners = _apply(to_image, self.box.reshape(2, 2))
        return _Hit(self.score, corners.reshape(4), _apply(to_image, self.keypoints))


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def _ssd_anchors(size: int, strides: tuple[int, ...], per_cell: tuple[int, ...]) -> np.ndarray:
    """SSD anchor centres (N, 2) in [0, 1], layer by layer, cells row-major, `per_cell` anchors per cell.

    BlazeFace uses fixed-size anchors (width = height = 1), so only the centres matter.
    """
    centres = []
    for stride, count in zip(strides, per_cell):
        cells = size // stride
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(grid, count, axis=0))
    return np.concatenate(centres)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def _blend_overlapping(hits: list[_Hit]) -> list[_Hit]:
    """BlazeFace's suppression: overlapping detections are averaged, weighted by score, best first."""
    hits = sorted(hits, key=lambda h: -h.score)
    if not hits:
        return []
    scores = np.array([h.score for h in hits])
    boxes = np.stack([h.box for h in hits])
    points = np.stack([h.keypoints for h in hits])
    left = np.ones(len(hits), bool)
    merged = []
    for i in range(len(hits)):
        if not left[i]:
            continue
        group = left & (_iou(boxes[i], boxes) > NMS_IOU)
        left &= ~group
        weights = scores[group] / scores[group].sum()
        merged.append(_Hit(float(scores[i]), weights @ boxes[group], np.tensordot(weights, points[group], axes=1)))
    return merged


class _Model:
    """One .tflite model from pcavs/assets on the LiteRT interpreter."""

    def __init__(self, name: str):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise InputError("detector 'litert' needs ai-edge-litert: pip install ai-edge-litert (or pass detector='mediapipe')") from None
        path = model_file(name)
        if not path.is_file():
            raise InputError(f"{path}: the bundled face model is missing; reinstall pcavs")
        with _quiet_stderr():  # LiteRT logs an INFO line from C++ for every interpreter
            self.interpreter = Interpreter(model_path=str(path), num_threads=min(4, os.cpu_count() or 1))
            self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        # outputs ordered by size, largest first: (regressors, scores) or (landmarks, presence)
        outputs = self.interpreter.get_output_details()
        self.outputs = [d["index"] for d in sorted(outputs, key=lambda d: -int(np.prod(d["shape"])))]

    def __call__(self, tensor: np.ndarray) -> list[np.ndarray]:
        self.interpreter.set_tensor(self.input, np.ascontiguousarray(tensor[None], np.float32))
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(i) for i in self.outputs]


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (C-level logging) for the duration of the block."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (some notebook hosts): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class _BlazeFace:
    """One BlazeFace model: the image letterboxed into its square input (values in [-1, 1]), SSD anchors, 6 keypoints."""

    def __init__(self, name: str, size: int, strides: tuple[int, ...], per_cell: tuple[int, ...]):
        self.model = _Model(name)
        self.size = size
        self.anchors = _ssd_anchors(size, strides, per_cell)

    def __call__(self, image: np.ndarray) -> list[_Hit]:
        """Faces in `image`, in its pixels."""
        h, w = image.shape[:2]
        scale = self.size / max(h, w)
        if scale != 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        square = np.full((self.size, self.size, 3), -1.0, np.float32)  # black border, top-left placement
        square[: image.shape[0], : image.shape[1]] = image / 127.5 - 1.0
        regressors, logits = self.model(square)
        logits = logits.reshape(-1).astype(np.float64)
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -100, 100)))
        hit = np.flatnonzero(scores > MIN_SCORE)
        if hit.size == 0:
            return []
        raw = regressors.reshape(len(self.anchors), -1)[hit].astype(np.float64) / self.size
        anchors = self.anchors[hit]
        centres = raw[:, :2] + anchors
        half = raw[:, 2:4] / 2
        # [0, 1] of the square (pixel edges) -> pixels of the input, centres at integers
        to_input = self.size / scale
        boxes = np.concatenate([centres - half, centres + half], axis=1) * to_input - 0.5
        points = (raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]) * to_input - 0.5
        return _blend_overlapping([_Hit(float(s), b, p) for s, b, p in zip(scores[hit], boxes, points)])


def mesh_roi(box: np.ndarray, right_eye: np.ndarray, left_eye: np.ndarray) -> np.ndarray:
    """2x3 affine from the mesh model's 192x192 input to the image: a square ROI_SCALE times the box, eyes level."""
    angle = _angle(right_eye, left_eye)
    side = ROI_SCALE * max(box[2] - box[0], box[3] - box[1])
    centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    unit = side / MESH_SIZE
    ex = unit * np.array([math.cos(angle), math.sin(angle)])
    ey = unit * np.array([-math.sin(angle), math.cos(angle)])
    origin = centre - ((MESH_SIZE - 1) / 2) * (ex + ey)
    return np.column_stack([ex, ey, origin])


class LiteRTDetector:
    """MediaPipe's face detectors and face mesh on LiteRT.

    1. First look: the short-range (128 px) and full-range (192 px) BlazeFace models on the
       whole image; if neither finds a face, the full-range model on overlapping tiles (for
       small faces in big photos).
    2. Second look at each candidate: a square ZOOM times its box, cut from the full image,
       through the short-range model, which places the box and eyes precisely.
    3. The 468-point mesh on a square 1.5x that box, turned so the eyes are level (by the
       detector's eye keypoints, then by the mesh's own when they differ); its presence
       score rejects non-faces; its points give the anchors.
    4. Only when nothing is found: all of this again on the image extended by its mirror
       image, so that a face cut by the border is found (and can be refused as cut off).
    """

    def __init__(self):
        self.short = _BlazeFace("face_detection_short_range", 128, (8, 16), (2, 6))
        self.full = _BlazeFace("face_detection_full_range_sparse", 192, (4,), (1,))
        self.mesh = _Model("face_landmark")
        self.lock = threading.Lock()  # one interpreter per model: one image at a time

    def detect(self, image: np.ndarray) -> list[Face]:
        return [face for face, _ in self.detect_with_mesh(image)]

    def detect_with_mesh(self, image: np.ndarray) -> list[tuple[Face, np.ndarray]]:
        """Each face with its 468 mesh points (x, y) in image pixels, largest first."""
        image = np.ascontiguousarray(image)
        with self.lock:
            return self._find(image) or self._find_at_border(image)

    def _find(self, image: np.ndarray) -> list[tuple[Face, np.ndarray]]:
        found = []
        for hit in self._candidates(image)[:MAX_CANDIDATES]:
            hit = self._second_look(image, hit)
            mesh = self._mesh(image, hit)
            if mesh is not None:
                found.append((Face(box=hit.box, score=hit.score, anchors=anchors_from_mesh(mesh)), mesh))
        return [found[i] for i in _ranking([face.anchors for face, _ in found])]

    def _find_at_border(self, image: np.ndarray) -> list[tuple[Face, np.ndarray]]:
        """Faces the detectors miss because the border cuts them: the image extended by its mirror
        image on every side (at most 2 x DETECT_MAX_SIDE), keeping faces centred inside the image."""
        h, w = image.shape[:2]
        scale = min(1.0, 2 * DETECT_MAX_SIDE / max(h, w))
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
        if min(small.shape[:2]) < 32:
            return []
        pad = min(round(BORDER_PAD * max(small.shape[:2])), min(small.shape[:2]) - 1)
        padded = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
        sx, sy = w / small.shape[1], h / small.shape[0]
        to_image = np.array([[sx, 0, (sx - 1) / 2 - sx * pad], [0, sy, (sy - 1) / 2 - sy * pad]])
        found = []
        for face, mesh in self._find(padded):
            anchors = _apply(to_image, face.anchors)
            x, y = anchors.mean(0)
            if 0 <= x < w and 0 <= y < h:
                box = _apply(to_image, face.box.reshape(2, 2)).reshape(4)
                found.append((Face(box=box, score=face.score, anchors=anchors), _apply(to_image, mesh)))
        return found

    def _candidates(self, image: np.ndarray) -> list[_Hit]:
        """First look: rough boxes in image pixels, best first."""
        # a huge image is thinned first (every step-th pixel), keeping 2x the detail the tiles need
        step = max(1, max(image.shape[:2]) // (2 * DETECT_MAX_SIDE))
        thinned = image[::step, ::step]
        hits = self.short(thinned) + self.full(thinned)
        if not hits:
            hits = self._tiles(thinned)
        return [hit.moved(np.array([[step, 0.0, 0.0], [0.0, step, 0.0]])) for hit in _suppress(hits)]

    def _tiles(self, image: np.ndarray) -> list[_Hit]:
        """The full-range model on TILES x TILES overlapping tiles, each half the long side of the
        image seen at most DETECT_MAX_SIDE large."""
        scale = min(1.0, DETECT_MAX_SIDE / max(image.shape[:2]))
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
        h, w = small.shape[:2]
        side = max(h, w) // 2
        if side < 2 * self.full.size:  # the whole image already was seen at this detail
            return []
        sx, sy = image.shape[1] / w, image.shape[0] / h  # cv2.resize maps pixel edges to edges
        hits = []
        for y in np.linspace(0, max(0, h - side), TILES if h > side else 1).round().astype(int):
            for x in np.linspace(0, max(0, w - side), TILES if w > side else 1).round().astype(int):
                to_image = np.array([[sx, 0, sx * x + (sx - 1) / 2], [0, sy, sy * y + (sy - 1) / 2]])
                hits += [hit.moved(to_image) for hit in self.full(small[y : y + side, x : x + side])]
        return hits

    def _second_look(self, image: np.ndarray, hit: _Hit) -> _Hit:
        """The hit re-detected in a close-up; the hit itself when the close-up shows no face."""
        size = self.short.size
        side = ZOOM * max(hit.box[2] - hit.box[0], hit.box[3] - hit.box[1])
        centre = (hit.box[:2] + hit.box[2:]) / 2
        unit = side / size  # image pixels per close-up pixel
        to_image = np.array([[unit, 0, centre[0] - unit * (size - 1) / 2], [0, unit, centre[1] - unit * (size - 1) / 2]])
        close_up = warp_affine(image, cv2.invertAffineTransform(to_image), (size, size))
        found = self.short(close_up)
        if not found:
            return hit
        middle = (size - 1) / 2
        best = min(found, key=lambda h: np.hypot(*((h.box[:2] + h.box[2:]) / 2 - middle)))
        return best.moved(to_image)

    def _mesh(self, image: np.ndarray, hit: _Hit) -> np.ndarray | None:
        """468 mesh points (x, y) in image pixels, or None when the mesh model sees no face.

        The mesh levels the eyes better than the detector's keypoints: when the two disagree by
        more than RELEVEL degrees, the mesh runs again on a crop turned by its own eye line.
        """
        mesh = self._mesh_once(image, hit.box, hit.keypoints[0], hit.keypoints[1])
        if mesh is None:
            return None
        right, left = mesh[MESH_EYE_CORNERS[0]], mesh[MESH_EYE_CORNERS[1]]
        if abs(math.remainder(_angle(right, left) - _angle(hit.keypoints[0], hit.keypoints[1]), 2 * math.pi)) > math.radians(RELEVEL):
            again = self._mesh_once(image, hit.box, right, left)
            mesh = again if again is not None else mesh
        return mesh

    def _mesh_once(self, image: np.ndarray, box: np.ndarray, right_eye: np.ndarray, left_eye: np.ndarray) -> np.ndarray | None:
        to_image = mesh_roi(box, right_eye, left_eye)
        crop = warp_affine(image, cv2.invertAffineTransform(to_image), (MESH_SIZE, MESH_SIZE), replicate=True)
        points, presence = self.mesh(crop.astype(np.float32) / 255.0)
        if 1.0 / (1.0 + math.exp(-float(np.clip(presence.reshape(-1)[0], -100, 100)))) < MIN_PRESENCE:
            return None
        xy = points.reshape(-1, 3)[:, :2].astype(np.float64) - 0.5  # pixel edges -> pixel centres
        return _apply(to_image, xy)


def _angle(start: np.ndarray, end: np.ndarray) -> float:
    return math.atan2(end[1] - start[1], end[0] - start[0])


def _suppress(hits: list[_Hit]) -> list[_Hit]:
    """Plain non-maximum suppression across models and tiles, best first."""
    kept: list[_Hit] = []
    for hit in sorted(hits, key=lambda h: -h.score):
        if not kept or (_iou(hit.box, np.stack([k.box for k in kept])) <= NMS_IOU).all():
            kept.append(hit)
    return kept


# ---------------------------------------------------------------- optional backends


class MediaPipeDetector:
    """The same mesh through the `mediapipe` package's legacy face-mesh solution."""

    def __init__(self):
        try:
            from mediapipe.python.solutions import face_mesh
        except ImportError:
            raise InputError(
                "detector 'mediapipe' needs mediapipe 0.10.21 or older (its face-mesh solution): "
                "pip install pcavs[mediapipe], or use detector='litert', which runs the same models"
            ) from None
        self.model = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=MAX_CANDIDATES, refine_landmarks=False)
        self.lock = threading.Lock()

    def detect(self, image: np.ndarray) -> list[Face]:
        with self.lock:
            found = self.model.process(np.ascontiguousarray(image)).multi_face_landmarks or []
        h, w = image.shape[:2]
        faces = []
        for landmarks in found:
            mesh = np.array([(p.x * w - 0.5, p.y * h - 0.5) for p in landmarks.landmark])
            faces.append(Face(box=np.concatenate([mesh.min(0), mesh.max(0)]), score=1.0, anchors=anchors_from_mesh(mesh)))
        return largest_first(faces)


class FanDetector:
    """The reference's FAN 68-point landmarks (face-alignment package; downloads its models on first use)."""

    def __init__(self):
        try:
            import face_alignment
            import torch
        except ImportError:
            raise InputError("detector 'face_alignment' needs the face-alignment package: pip install pcavs[fan]") from None
        kind = getattr(face_alignment.LandmarksType, "TWO_D", None) or getattr(face_alignment.LandmarksType, "_2D")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.model = face_alignment.FaceAlignment(kind, device=device)
        except Exception as exc:  # its first use downloads models
            reason = " ".join(str(exc).split())
            raise InputError(
                f"detector 'face_alignment': could not load its models ({reason}); check the network, or use detector='litert'"
            ) from None
        self.lock = threading.Lock()

    def detect(self, image: np.ndarray) -> list[Face]:
        with self.lock:
            found = self.model.get_landmarks_from_image(np.ascontiguousarray(image)) or []
        faces = [
            Face(box=np.concatenate([p[:, :2].min(0), p[:, :2].max(0)]).astype(np.float64), score=1.0, anchors=anchors_from_68(p))
            for p in found
        ]
        return largest_first(faces)


BACKENDS = {"litert": LiteRTDetector, "mediapipe": MediaPipeDetector, "face_alignment": FanDetector}


def get_detector(name: str = "litert") -> Detector:
    """The detector backend called `name`, loaded once per process (`get_detector.cache_clear()` forgets them)."""
    if name not in BACKENDS:
        raise InputError(f"detector: {name!r} is not one of {', '.join(BACKENDS)}; pass detector='litert' (the default)")
    return _loaded(name)


@functools.lru_cache(maxsize=None)
def _loaded(name: str) -> Detector:
    return BACKENDS[name]()


get_detector.cache_clear = _loaded.cache_clear
