"""The LiteRT face detector: faces found and ranked, anchors where the spec puts them, optional backends."""
from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest

from pcavs.faces.align import ANCHOR_TARGETS, similarity_transform
from pcavs.faces.detect import (
    MESH_INNER_MOUTH,
    MESH_LEFT_EYE,
    MESH_RIGHT_EYE,
    Face,
    anchors_from_68,
    get_detector,
)
from pcavs.core.errors import InputError

from support.faces import apply, fitted, identity_crop, place_face, placement, two_faces

NOSE_TIP = 1  # mesh index
# MediaPipe's full eye contours: a second, independent estimate of each eye's centre
RIGHT_EYE_CONTOUR = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE_CONTOUR = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)


@pytest.fixture(scope="module")
def detector():
    return get_detector("litert")


@pytest.fixture(scope="module")
def kit_face(detector):
    """(Face, mesh) of the kit's aligned crop."""
    found = detector.detect_with_mesh(identity_crop())
    assert len(found) == 1
    return found[0]


def test_one_face_in_the_aligned_crop(kit_face):
    face, mesh = kit_face
    assert isinstance(face, Face) and face.anchors.shape == (3, 2) and face.anchors.dtype == np.float64
    assert 0.5 < face.score <= 1 and mesh.shape == (468, 2)
    x0, y0, x1, y1 = face.box
    assert 30 < x0 < 70 and 150 < x1 < 200 and 0 < y0 < 50 and 130 < y1 < 190
    with pytest.raises(dataclasses.FrozenInstanceError):
        face.score = 0.0


def test_mesh_indices_sit_where_the_68_point_scheme_puts_its_points(kit_face):
    """The anchors' mesh points, taken in 68-point order, are the eyes' corners and lids and the inner lip."""
    _, mesh = kit_face
    nose_x = mesh[NOSE_TIP, 0]
    right, left, mouth = (mesh[list(group)] for group in (MESH_RIGHT_EYE, MESH_LEFT_EYE, MESH_INNER_MOUTH))
    # the subject's right eye is on the image's left; 68-point 36 is its outer corner, 39 the inner
    assert (right[:, 0] < nose_x).all() and (left[:, 0] > nose_x).all()
    assert right[0, 0] == right[:, 0].min() and right[3, 0] == right[:, 0].max()
    assert left[0, 0] == left[:, 0].min() and left[3, 0] == left[:, 0].max()
    for eye in (right, left):  # 37-38 / 43-44 on the upper lid, 40-41 / 46-47 on the lower
        assert eye[[1, 2], 1].max() < eye[[4, 5], 1].min()
    # inner lip: 60 and 64 corners, 61-63 upper lip, 65-67 lower lip (an open smile: a real gap)
    assert mouth[0, 0] == mouth[:, 0].min() and mouth[4, 0] == mouth[:, 0].max()
    assert mouth[[1, 2, 3], 1].max() < mouth[[5, 6, 7], 1].min()
    assert mouth[:, 1].min() > max(right[:, 1].max(), left[:, 1].max()) + 30
    # each eye's anchor agrees with the centre of MediaPipe's full 16-point eye contour
    anchors = kit_face[0].anchors
    assert np.abs(anchors[0] - mesh[list(RIGHT_EYE_CONTOUR)].mean(0)).max() < 1.5
    assert np.abs(anchors[1] - mesh[list(LEFT_EYE_CONTOUR)].mean(0)).max() < 1.5


def test_aligned_crop_realigns_to_itself(kit_face):
    """The kit's crop was aligned to the spec's targets: our anchors give back a near-identity transform."""
    anchors = kit_face[0].anchors
    assert np.abs(anchors - ANCHOR_TARGETS).max() < 6  # a face is not the template: the fit leaves a few px
    matrix = similarity_transform(anchors, ANCHOR_TARGETS)
    assert np.abs(apply(matrix, ANCHOR_TARGETS) - ANCHOR_TARGETS).max() < 1.5


def test_anchors_follow_the_face(detector, kit_face):
    """Scaled, turned (even sideways) and moved, the face's anchors move with it: within 2 px at the crop's scale."""
    base = kit_face[0].anchors
    for scale, degrees in [(0.5, 25.0), (1.7, -35.0), (3.2, 60.0), (2.0, -90.0)]:
        canvas, matrix = fitted(scale, degrees)
        faces = detector.detect(canvas)
        assert len(faces) == 1, (scale, degrees)
        error = np.linalg.norm(faces[0].anchors - apply(matrix, base), axis=1).max() / scale
        assert error < 2.0, (scale, degrees, error)


def test_mirrored_photo_gives_mirrored_anchors(detector):
    """Pixel-centre conventions are right: mirroring the photo mirrors the anchors (the eyes swap)."""
    canvas, _ = fitted(3.0, 0.0)
    width = canvas.shape[1]
    anchors = detector.detect(canvas)[0].anchors
    mirrored = detector.detect(np.ascontiguousarray(canvas[:, ::-1]))[0].anchors
    back = np.column_stack([width - 1 - mirrored[:, 0], mirrored[:, 1]])[[1, 0, 2]]
    assert np.abs((back - anchors).mean(0)).max() / 3.0 < 0.5  # no half-pixel bias (in crop pixels)


def test_several_faces_largest_first_and_no_duplicates(detector):
    canvas, big, small = two_faces()
    faces = detector.detect(canvas)
    assert len(faces) == 2
    assert np.abs(faces[0].anchors - apply(big, ANCHOR_TARGETS)).max() < 1.4 * 8
    assert np.abs(faces[1].anchors - apply(small, ANCHOR_TARGETS)).max() < 0.9 * 8
    # one small face in a big canvas is one face, not two overlapping guesses
    for offset in [(300, 300), (610, 180)]:
        lone = place_face((1000, 1000), placement(0.3, 0.0, offset))
        assert len(detector.detect(lone)) == 1, offset


def test_small_face_in_a_big_photo_is_found(detector):
    """A face 5% of the photo's width: too small for the first look, found by the tiled look."""
    canvas = place_face((2000, 2600), placement(0.55, 10.0, (1700, 1300)))
    faces = detector.detect(canvas)
    assert len(faces) == 1
    expected = apply(placement(0.55, 10.0, (1700, 1300)), ANCHOR_TARGETS)
    assert np.abs(faces[0].anchors - expected).max() < 0.55 * 8


def test_no_face_in_noise_gradients_or_flat_images(detector):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    ramp = np.repeat(np.linspace(0, 255, 500, dtype=np.float32)[None, :, None], 3, axis=2)
    gradient = np.broadcast_to(ramp, (360, 500, 3)).astype(np.uint8)
    for image in (noise, gradient, np.zeros((64, 64, 3), np.uint8), np.full((1, 1, 3), 255, np.uint8)):
        assert detector.detect(image) == []


def test_68_point_anchors_are_the_spec_means():
    points = np.arange(68 * 2, dtype=np.float64).reshape(68, 2)
    anchors = anchors_from_68(points)
    assert np.allclose(anchors, [points[36:42].mean(0), points[42:48].mean(0), points[60:68].mean(0)])


def test_detector_is_loaded_once_and_names_are_checked():
    assert get_detector() is get_detector("litert")
    with pytest.raises(InputError, match="not one of"):
        get_detector("dlib")


@pytest.mark.parametrize("name, package", [("mediapipe", "mediapipe"), ("face_alignment", "face_alignment")])
def test_optional_backends_say_how_to_install(name, package):
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    with pytest.raises(InputError, match=rf"^detector '{name}' needs .*pip install pcavs\[") as caught:
        get_detector(name)
    assert "\n" not in str(caught.value)
