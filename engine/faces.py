"""Face analysis with insightface's ``FaceAnalysis``: detection, keypoints, the normalised identity
embedding and crops; face similarity (the cosine of identity embeddings), identity mixing, and the
per-photo checks of the photo studio.

Nothing here logs or keeps face data: embeddings and crops go back to the caller, who stores them with
their owner.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

# insightface's own detector input size; the tiny pack reads the same.
DETECTION_SIZE = (640, 640)
# Photo-studio limits. A face under MIN_FACE_PX (its box's shorter side) carries too little detail to
# learn; a sharpness under MIN_SHARPNESS (variance of the Laplacian over the face, resized to
# SHARPNESS_SIDE px) is a blurred or out-of-focus face (insightface's sample portrait measures about 33
# at any size, and 4 after a 1 px Gaussian blur); an identity further than SAME_PERSON from the
# group's median is somebody else (ArcFace embeddings of one person sit well above 0.4, strangers near 0).
MIN_FACE_PX = 96
MIN_SHARPNESS = 15.0
SHARPNESS_SIDE = 256
SAME_PERSON = 0.4


@dataclass
class Face:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in the photo's pixels
    keypoints: list[tuple[float, float]]  # eyes, nose tip, mouth corners
    score: float
    embedding: np.ndarray  # 512-d, unit length

    @property
    def size(self) -> float:
        """The shorter side of the face's box, in pixels."""
        return min(self.box[2] - self.box[0], self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


def to_bgr(image: Image.Image) -> np.ndarray:
    """insightface and OpenCV read BGR arrays."""
    return cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)


class FaceAnalyzer:
    """One loaded face-analysis pack (``FaceAnalysis``, prepared once per worker)."""

    def __init__(self, analysis):
        self.analysis = analysis

    def faces(self, image: Image.Image) -> list[Face]:
        """Every face in ``image``, the largest first."""
        found = [Face(box=tuple(float(v) for v in f.bbox), keypoints=[(float(x), float(y)) for x, y in f.kps],
                      score=float(f.det_score), embedding=np.asarray(f.normed_embedding, dtype=np.float32))
                 for f in self.analysis.get(to_bgr(image))]
        return sorted(found, key=lambda face: face.area, reverse=True)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two identity embeddings: 1 the same face, about 0 strangers."""
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def _unit(vector: np.ndarray) -> np.ndarray:
    return (vector / (np.linalg.norm(vector) + 1e-12)).astype(np.float32)


def mean_identity(embeddings: list[np.ndarray]) -> np.ndarray:
    """One identity from several photos of a person: the mean of the normalised embeddings, normalised."""
    if not embeddings:
        raise ValueError("no face embeddings to combine")
    return _unit(np.mean([_unit(e) for e in embeddings], axis=0))


def mix_identities(first: np.ndarray, second: np.ndarray, weight: float) -> np.ndarray:
    """A blend of two people: ``weight`` 0 is the first, 1 the second."""
    return _unit((1 - weight) * _unit(first) + weight * _unit(second))


def best_matches(embeddings: list[np.ndarray | None], identity: np.ndarray, keep: int) -> list[tuple[int, float | None]]:
    """(index, similarity) of the ``keep`` candidates most like ``identity``, best first; a candidate in
    which no face was found has similarity None and comes last."""
    scored = [(i, None if e is None else similarity(e, identity)) for i, e in enumerate(embeddings)]
    scored.sort(key=lambda item: (item[1] is None, -(item[1] or 0.0)))
    return scored[:keep]


def sharpness(image: Image.Image, face: Face) -> float:
    """Variance of the Laplacian over the face's box, resized to a fixed side so the measure does not
    depend on the photo's resolution. Low values mean blur."""
    x0, y0, x1, y1 = (int(round(v)) for v in face.box)
    gray = cv2.cvtColor(to_bgr(image), cv2.COLOR_BGR2GRAY)
    region = gray[max(0, y0):max(y0 + 1, y1), max(0, x0):max(x0 + 1, x1)]
    # Area averaging to shrink; cubic to enlarge (area enlarges like nearest-neighbour, whose blocky steps
    # would read as detail).
    shrink = min(region.shape) >= SHARPNESS_SIDE
    region = cv2.resize(region, (SHARPNESS_SIDE, SHARPNESS_SIDE), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    return float(cv2.Laplacian(region, cv2.CV_64F).var())


def aligned_crop(image: Image.Image, face: Face, side: int, context: float = 1.0) -> Image.Image:
    """The face aligned by its keypoints to ArcFace's template (eyes level, the same place every time), as a
    ``side`` px square; ``context`` above 1 widens it around the face (2: head, hair and shoulders, which
    an identity LoRA learns from too). Outside the photo, its edge pixels are repeated."""
    from insightface.utils.face_align import estimate_norm

    template = 112  # ArcFace's crop, in which estimate_norm places the keypoints
    to_template = estimate_norm(np.asarray(face.keypoints, dtype=np.float32), template)
    scale = side / (template * context)
    transform = to_template * scale
    transform[:, 2] = (to_template[:, 2] - template / 2) * scale + side / 2
    crop = cv2.warpAffine(np.asarray(image.convert("RGB")), transform, (side, side), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    return Image.fromarray(crop)


@dataclass
class PhotoCheck:
    """What the analysis of one uploaded photo found, and whether it can be used."""

    index: int
    faces: int
    face: Face | None = None
    sharpness: float | None = None
    similarity: float | None = None  # to the group's median identity
    problems: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return not self.problems


def check_photo(index: int, image: Image.Image, faces: list[Face]) -> PhotoCheck:
    """The checks one photo passes alone: exactly one face, large enough, sharp enough."""
    check = PhotoCheck(index=index, faces=len(faces))
    if not faces:
        check.problems.append("No face found: use a photo where the face is visible and well lit.")
        return check
    if len(faces) > 1:
        check.problems.append(f"{len(faces)} faces found: use a photo of the person alone (or crop the others out).")
        return check
    face = check.face = faces[0]
    if face.size < MIN_FACE_PX:
        check.problems.append(f"The face is too small ({face.size:.0f} px across, at least {MIN_FACE_PX} needed): "
                              "use a closer or larger photo.")
        return check  # too few pixels to judge sharpness by
    check.sharpness = sharpness(image, face)
    if check.sharpness < MIN_SHARPNESS:
        check.problems.append(f"The face is blurred (sharpness {check.sharpness:.0f}, at least {MIN_SHARPNESS:.0f} "
                              "needed): use a sharper photo.")
    return check


def check_same_person(checks: list[PhotoCheck]) -> np.ndarray | None:
    """Compare every photo with one face to the group's median identity and flag the ones of somebody
    else; return the identity of the photos that pass every check (None when none does)."""
    with_face = [c for c in checks if c.face is not None]
    if not with_face:
        return None
    median = _unit(np.median([c.face.embedding for c in with_face], axis=0))
    for check in with_face:
        check.similarity = similarity(check.face.embedding, median)
        if len(with_face) > 2 and check.similarity < SAME_PERSON:
            check.problems.append(f"This looks like a different person from the other photos (similarity "
                                  f"{check.similarity:.2f} to the group, at least {SAME_PERSON} expected).")
    usable = [c.face.embedding for c in with_face if c.usable]
    return mean_identity(usable) if usable else None
