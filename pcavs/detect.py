"""Faces and their three alignment anchors, offline.

Default backend `litert`: MediaPipe's BlazeFace detectors and 468-point face mesh
(`pcavs/assets/*.tflite`, Apache-2.0) run by Google's LiteRT interpreter. Optional
backends behind the same interface: `mediapipe` (the same mesh through the mediapipe
package) and `face_alignment` (the reference's FAN 68-point detector).

Anchors (spec §2): the subject's right-eye centre, left-eye centre, inner-mouth centre.
From the mesh they are the means of its eye contours and inner-lip contour (indices
below); from 68 points, the means of 36-41, 42-47 and 60-67.
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from .demo import ASSETS
from .errors import InputError

# Mesh indices (MediaPipe's canonical 468-point topology); "right" is the subject's right.
MESH_RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
MESH_LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
MESH_INNER_LIPS = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
FAN_RIGHT_EYE, FAN_LEFT_EYE, FAN_INNER_MOUTH = range(36, 42), range(42, 48), range(60, 68)

DETECT_MAX_SIDE = 1280  # images are downscaled to this for detection only
MIN_SCORE = 0.5
NMS_IOU = 0.3
MESH_SIZE = 192
ROI_SCALE = 1.5  # the mesh sees a square 1.5x the detected box, rotated upright


@dataclass(frozen=True)
class Face:
    box: np.ndarray  # (4,) x0, y0, x1, y1 in image pixels
    score: float
    anchors: np.ndarray  # (3, 2) float64 (x, y): right-eye centre, left-eye centre, inner-mouth centre


class Detector(Protocol):
    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an RGB uint8 image, largest first."""


def anchors_from_mesh(mesh: np.ndarray) -> np.ndarray:
    """(468, 2+) mesh points -> the three anchors."""
    groups = (MESH_RIGHT_EYE, MESH_LEFT_EYE, MESH_INNER_LIPS)
    return np.stack([mesh[list(g), :2].mean(axis=0) for g in groups]).astype(np.float64)


def anchors_from_68(points: np.ndarray) -> np.ndarray:
    """(68, 2+) landmarks -> the three anchors."""
    groups = (FAN_RIGHT_EYE, FAN_LEFT_EYE, FAN_INNER_MOUTH)
    return np.stack([points[list(g), :2].mean(axis=0) for g in groups]).astype(np.float64)


def _ssd_anchors(size: int, strides: tuple[int, ...], per_cell: tuple[int, ...]) -> np.ndarray:
    """Anchor centres (N, 2) in [0, 1], cell by cell, row-major, `per_cell` anchors each."""
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
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-9)


def _weighted_nms(scores: np.ndarray, boxes: np.ndarray, points: np.ndarray) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """BlazeFace's blending suppression: overlapping detections are averaged, weighted by score."""
    order = np.argsort(-scores)
    scores, boxes, points = scores[order], boxes[order], points[order]
    kept = []
    remaining = np.ones(len(scores), bool)
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        group = remaining & (_iou(boxes[i], boxes) > NMS_IOU)
        remaining &= ~group
        weights = scores[group][:, None]
        kept.append(
            (
                float(scores[i]),
                (boxes[group] * weights).sum(0) / weights.sum(),
                (points[group] * weights[:, :, None]).sum(0) / weights.sum(),
            )
        )
    return kept


class _BlazeFace:
    """One BlazeFace model: letterboxed square input in [-1, 1], SSD anchors, 6 keypoints."""

    def __init__(self, model: str, size: int, strides: tuple[int, ...], per_cell: tuple[int, ...]):
        self.interpreter = _interpreter(model)
        self.size = size
        self.anchors = _ssd_anchors(size, strides, per_cell)

    def __call__(self, image: np.ndarray) -> list[tuple[float, np.ndarray, np.ndarray]]:
        """(score, box xyxy, keypoints (6, 2)) in the pixels of `image`."""
        h, w = image.shape[:2]
        scale = self.size / max(h, w)
        resized = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        square = np.zeros((self.size, self.size, 3), np.float32)
        square[: resized.shape[0], : resized.shape[1]] = resized / 127.5 - 1.0
        regressors, logits = _run(self.interpreter, square[None])
        raw = regressors.reshape(len(self.anchors), -1) / self.size
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits.reshape(-1).astype(np.float64), -100, 100)))
        hit = scores > MIN_SCORE
        if not hit.any():
            return []
        raw, anchors = raw[hit], self.anchors[hit]
        centres = raw[:, :2] + anchors
        half = raw[:, 2:4] / 2
        boxes = np.concatenate([centres - half, centres + half], axis=1) * (self.size / scale)
        points = (raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]) * (self.size / scale)
        return _weighted_nms(scores[hit], boxes, points)


def _interpreter(model: str):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise InputError("the litert face detector needs ai-edge-litert: pip install ai-edge-litert (or detector='mediapipe')") from None
    with _quiet_stderr():  # LiteRT logs an INFO line from C++ for every interpreter
        interpreter = Interpreter(model_path=str(ASSETS / f"{model}.tflite"), num_threads=2)
        interpreter.allocate_tensors()
    return interpreter


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (C-level logging) for the duration of the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _run(interpreter, tensor: np.ndarray) -> list[np.ndarray]:
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor.astype(np.float32))
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]


def mesh_roi(box: np.ndarray, right_eye: np.ndarray, left_eye: np.ndarray) -> np.ndarray:
    """2x3 affine from the mesh model's 192x192 input to the image: a square 1.5x the box, turned upright."""
    angle = math.atan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0])
    side = ROI_SCALE * max(box[2] - box[0], box[3] - box[1])
    centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    unit = side / MESH_SIZE
    ex = unit * np.array([math.cos(angle), math.sin(angle)])
    ey = unit * np.array([-math.sin(angle), math.cos(angle)])
    origin = centre - (MESH_SIZE / 2) * (ex + ey)
    return np.column_stack([ex, ey, origin])


class LiteRTDetector:
    """MediaPipe's detectors and face mesh on LiteRT; the short-range detector first, the full-range one for small faces."""

    def __init__(self):
        self.short = _BlazeFace("face_detection_short_range", 128, (8, 16), (2, 6))
        self.full = _BlazeFace("face_detection_full_range_sparse", 192, (4,), (1,))
        self.mesh = _interpreter("face_landmark")

    def detect(self, image: np.ndarray) -> list[Face]:
        scale = min(1.0, DETECT_MAX_SIDE / max(image.shape[:2]))
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
        found = self.short(small) or self.full(small)
        faces = []
        for score, box, points in found:
            box, points = box / scale, points / scale
            mesh = self._mesh(image, box, points[0], points[1])
            if mesh is not None:
                faces.append(Face(box=box, score=score, anchors=anchors_from_mesh(mesh)))
        return sorted(faces, key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))

    def _mesh(self, image: np.ndarray, box: np.ndarray, right_eye: np.ndarray, left_eye: np.ndarray) -> np.ndarray | None:
        """468 mesh points in image pixels, or None when the mesh model sees no face."""
        to_image = mesh_roi(box, right_eye, left_eye)
        to_crop = cv2.invertAffineTransform(to_image)
        crop = cv2.warpAffine(image, to_crop, (MESH_SIZE, MESH_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        points, presence = _run(self.mesh, (crop.astype(np.float32) / 255.0)[None])
        if 1.0 / (1.0 + math.exp(-float(presence.reshape(-1)[0]))) < MIN_SCORE:
            return None
        xy = points.reshape(-1, 3)[:, :2]
        return xy @ to_image[:, :2].T + to_image[:, 2]


class MediaPipeDetector:
    """The same models through the `mediapipe` package (for platforms without LiteRT wheels)."""

    def __init__(self):
        try:
            from mediapipe.python.solutions import face_mesh
        except ImportError:
            raise InputError("detector 'mediapipe' needs the mediapipe package: pip install pcavs[mediapipe]") from None
        self.model = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=8, refine_landmarks=False)

    def detect(self, image: np.ndarray) -> list[Face]:
        found = self.model.process(image).multi_face_landmarks or []
        h, w = image.shape[:2]
        faces = []
        for landmarks in found:
            mesh = np.array([(p.x * w, p.y * h) for p in landmarks.landmark])
            box = np.concatenate([mesh.min(0), mesh.max(0)])
            faces.append(Face(box=box, score=1.0, anchors=anchors_from_mesh(mesh)))
        return sorted(faces, key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))


class FanDetector:
    """The reference's FAN 68-point landmarks (`pip install pcavs[fan]`; downloads its models on first use)."""

    def __init__(self):
        try:
            import face_alignment
        except ImportError:
            raise InputError("detector 'face_alignment' needs the face-alignment package: pip install pcavs[fan]") from None
        kind = getattr(face_alignment.LandmarksType, "TWO_D", None) or getattr(face_alignment.LandmarksType, "_2D")
        self.model = face_alignment.FaceAlignment(kind, device="cpu")

    def detect(self, image: np.ndarray) -> list[Face]:
        found = self.model.get_landmarks_from_image(image) or []
        faces = [Face(box=np.concatenate([p[:, :2].min(0), p[:, :2].max(0)]), score=1.0, anchors=anchors_from_68(p)) for p in found]
        return sorted(faces, key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))


BACKENDS = {"litert": LiteRTDetector, "mediapipe": MediaPipeDetector, "face_alignment": FanDetector}


@functools.lru_cache(maxsize=None)
def get_detector(name: str = "litert") -> Detector:
    """The detector backend called `name` (loaded once)."""
    if name not in BACKENDS:
        raise InputError(f"detector: {name!r} is not one of {', '.join(BACKENDS)}")
    return BACKENDS[name]()
