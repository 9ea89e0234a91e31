"""Face analysis through insightface's real ``FaceAnalysis`` with the tiny profile's pack: detection,
keypoints and identity embeddings of drawn photos (tests/support_faces.py), similarity and identity
mixing, the photo studio's per-photo checks, portrait crops, and the sharpness measure on a real photo.
"""

from pathlib import Path

import insightface
import numpy as np
import pytest
from PIL import Image, ImageFilter

from engine.faces import (
    MIN_FACE_PX,
    MIN_SHARPNESS,
    SAME_PERSON,
    Face,
    aligned_crop,
    best_matches,
    check_photo,
    check_same_person,
    mean_identity,
    mix_identities,
    sharpness,
    similarity,
)
from storage.loras import DUPLICATE_BITS, _difference_hash
from tests.support_faces import PERSON_A, PERSON_B, face_photo, person_photos

INSIGHTFACE_IMAGES = Path(insightface.__file__).parent / "data" / "images"


@pytest.fixture(scope="module")
def analyzer(tiny, cache):
    return cache.faces(tiny)


@pytest.fixture(scope="module")
def photos_a():
    return person_photos(PERSON_A, 4, seed=1)


@pytest.fixture(scope="module")
def photo_b():
    return person_photos(PERSON_B, 1, seed=2)[0]


@pytest.fixture(scope="module")
def identity_a(analyzer, photos_a):
    return [analyzer.faces(photo)[0].embedding for photo in photos_a]


@pytest.fixture(scope="module")
def identity_b(analyzer, photo_b):
    return analyzer.faces(photo_b)[0].embedding


def noisy(embedding: np.ndarray, seed: int, amount: float = 0.6) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(size=embedding.shape)
    return (embedding + amount * noise / np.linalg.norm(noise)).astype(np.float32)


# --- detection and embeddings -------------------------------------------------------------------------


def test_one_face_is_found_where_it_was_drawn(analyzer):
    x, y, side = 120, 200, 180
    faces = analyzer.faces(face_photo([(x, y, side, PERSON_A)]))
    assert len(faces) == 1
    face = faces[0]
    assert np.abs(np.subtract(face.box, (x, y, x + side, y + side))).max() <= 16, face.box
    assert face.score > 0.5
    assert len(face.keypoints) == 5
    x0, y0, x1, y1 = face.box
    assert all(x0 <= kx <= x1 and y0 <= ky <= y1 for kx, ky in face.keypoints), face.keypoints
    # Eyes above the nose above the mouth, the left eye and mouth corner left of the right ones.
    (lex, ley), (rex, rey), (_, ny), (lmx, lmy), (rmx, rmy) = face.keypoints
    assert max(ley, rey) < ny < min(lmy, rmy) and lex < rex and lmx < rmx


def test_every_face_is_found_the_largest_first_and_none_on_an_empty_photo(analyzer):
    faces = analyzer.faces(face_photo([(30, 40, 160, PERSON_A), (250, 330, 200, PERSON_B)]))
    assert len(faces) == 2
    assert faces[0].area > faces[1].area
    assert faces[0].box[0] > 200 and faces[1].box[0] < 100  # the larger face is the one drawn on the right
    assert analyzer.faces(face_photo([])) == []


def test_the_embedding_is_unit_length_and_512_wide(identity_a):
    embedding = identity_a[0]
    assert embedding.shape == (512,) and embedding.dtype == np.float32
    assert abs(np.linalg.norm(embedding) - 1) < 1e-5


def test_photos_of_one_person_are_alike_and_of_two_people_not(identity_a, identity_b):
    for first in range(len(identity_a)):
        for second in range(first + 1, len(identity_a)):
            assert similarity(identity_a[first], identity_a[second]) > 0.9
        assert similarity(identity_a[first], identity_b) < 0.5
    assert similarity(identity_b, identity_b) == pytest.approx(1.0, abs=1e-5)


# --- the photo studio's checks ------------------------------------------------------------------------


def checked(analyzer, photo):
    return check_photo(0, photo, analyzer.faces(photo))


def test_a_photo_without_a_face_is_refused(analyzer):
    check = checked(analyzer, face_photo([]))
    assert check.faces == 0 and check.face is None and not check.usable
    assert check.problems == ["No face found: use a photo where the face is visible and well lit."]


def test_a_photo_of_several_people_is_refused(analyzer):
    check = checked(analyzer, face_photo([(20, 30, 160, PERSON_A), (260, 350, 170, PERSON_B)]))
    assert check.faces == 2 and not check.usable
    assert check.problems == ["2 faces found: use a photo of the person alone (or crop the others out)."]


@pytest.mark.parametrize("corner", [96, 100], ids=["on-the-grid", "off-the-grid"])
def test_a_small_face_is_refused(analyzer, corner):
    # The detector reads 8 px cells: at 96 the square covers five whole cells, at 100 four cells and two
    # halves, whose four equally deep middle cells must still make one face, not two.
    check = checked(analyzer, face_photo([(corner, corner, 40, PERSON_A)]))
    assert check.faces == 1 and check.face.size < MIN_FACE_PX and not check.usable
    assert len(check.problems) == 1 and check.problems[0].startswith("The face is too small")
    assert f"at least {MIN_FACE_PX} needed" in check.problems[0]


def test_a_blurred_face_is_refused_and_a_sharp_one_accepted(analyzer):
    faces = [(100, 180, 200, PERSON_A)]
    blurred = checked(analyzer, face_photo(faces, blur=3))
    assert blurred.faces == 1 and blurred.sharpness < MIN_SHARPNESS and not blurred.usable
    assert len(blurred.problems) == 1 and blurred.problems[0].startswith("The face is blurred")

    good = checked(analyzer, face_photo(faces))
    assert good.usable and good.problems == [] and good.faces == 1
    assert good.face.size >= MIN_FACE_PX and good.sharpness > 3 * MIN_SHARPNESS


def test_the_photo_of_somebody_else_is_flagged_and_the_identity_is_the_others(analyzer, photos_a, photo_b, identity_a, identity_b):
    photos = [*photos_a[:2], photo_b, *photos_a[2:]]
    # Five different uploads, not one photo five times.
    hashes = [_difference_hash(photo) for photo in photos]
    assert all(bin(a ^ b).count("1") > DUPLICATE_BITS for i, a in enumerate(hashes) for b in hashes[i + 1:])

    checks = [check_photo(i, photo, analyzer.faces(photo)) for i, photo in enumerate(photos)]
    assert all(check.usable for check in checks)
    identity = check_same_person(checks)
    assert [check.usable for check in checks] == [True, True, False, True, True]
    odd = checks[2]
    assert odd.similarity < SAME_PERSON
    assert len(odd.problems) == 1 and odd.problems[0].startswith("This looks like a different person")
    assert all(check.similarity > 0.9 for check in checks if check is not odd)

    assert abs(np.linalg.norm(identity) - 1) < 1e-5
    assert similarity(identity, mean_identity(identity_a)) > 0.999
    assert similarity(identity, identity_b) < 0.5


def test_two_photos_are_not_compared_and_no_usable_photo_gives_no_identity(analyzer, photos_a, photo_b):
    # With two photos there is no majority to tell who is the odd one.
    checks = [check_photo(i, photo, analyzer.faces(photo)) for i, photo in enumerate([photos_a[0], photo_b])]
    assert check_same_person(checks) is not None and all(check.usable for check in checks)
    assert check_same_person([check_photo(0, face_photo([]), [])]) is None


# --- identities ---------------------------------------------------------------------------------------


def test_the_mean_identity_is_closer_to_each_photo_than_they_are_to_each_other(identity_a):
    first, second = noisy(identity_a[0], 1), noisy(identity_a[0], 2)
    mean = mean_identity([first, second])
    assert abs(np.linalg.norm(mean) - 1) < 1e-5
    apart = similarity(first, second)
    assert similarity(mean, first) > apart and similarity(mean, second) > apart
    assert similarity(mean, identity_a[0]) > max(similarity(first, identity_a[0]), similarity(second, identity_a[0]))
    with pytest.raises(ValueError, match="no face embeddings"):
        mean_identity([])


def test_mixing_two_people(identity_a, identity_b):
    first, second = identity_a[0], identity_b
    assert similarity(mix_identities(first, second, 0.0), first) == pytest.approx(1.0, abs=1e-5)
    assert similarity(mix_identities(first, second, 1.0), second) == pytest.approx(1.0, abs=1e-5)
    half = mix_identities(first, second, 0.5)
    assert abs(np.linalg.norm(half) - 1) < 1e-5
    assert similarity(half, first) == pytest.approx(similarity(half, second), abs=1e-5)
    assert similarity(half, first) > similarity(first, second) + 0.3
    # More weight, more of the second person.
    assert similarity(mix_identities(first, second, 0.25), second) < similarity(half, second) < similarity(
        mix_identities(first, second, 0.75), second)


def test_best_matches_come_first_and_a_picture_without_a_face_last(identity_a, identity_b):
    identity = identity_a[0]
    candidates = [identity_b, None, noisy(identity, 3, amount=1.0), identity_a[1]]
    ranked = best_matches(candidates, identity, keep=4)
    assert [index for index, _ in ranked] == [3, 2, 0, 1]
    scores = [score for _, score in ranked]
    assert scores[0] > scores[1] > scores[2] and scores[3] is None
    assert best_matches(candidates, identity, keep=2) == ranked[:2]
    assert best_matches([None, None], identity, keep=1) == [(0, None)]


# --- crops and sharpness ------------------------------------------------------------------------------


def test_the_aligned_crop_is_square_and_centred_on_the_face(analyzer):
    photo = face_photo([(150, 220, 180, PERSON_B)])
    face = analyzer.faces(photo)[0]
    crop = aligned_crop(photo, face, 256, context=2.0)
    assert crop.size == (256, 256)
    pixels = np.asarray(crop, dtype=np.float32)
    centre = pixels[118:138, 118:138].reshape(-1, 3).mean(axis=0)
    assert np.abs(centre - PERSON_B).max() < 10, centre
    # The crop takes in the surroundings: its corners are the dark background.
    assert pixels[:20, :20].mean() < 70 and pixels[-20:, -20:].mean() < 70


def test_a_face_at_the_photo_edge_is_cropped_square_padded_with_the_edge(analyzer):
    photo = face_photo([(0, 440, 200, PERSON_A)])  # the face touches the left and bottom edges
    face = analyzer.faces(photo)[0]
    crop = aligned_crop(photo, face, 128, context=2.0)
    assert crop.size == (128, 128)
    centre = np.asarray(crop, dtype=np.float32)[56:72, 56:72].reshape(-1, 3).mean(axis=0)
    assert np.abs(centre - PERSON_A).max() < 10, centre


def test_sharpness_separates_a_real_photo_from_a_blurred_copy():
    """Calibrates MIN_SHARPNESS on a real face: insightface's own 112 px aligned crop of Tom Hanks."""
    photo = Image.open(INSIGHTFACE_IMAGES / "Tom_Hanks_54745.png").convert("RGB")
    whole = Face(box=(0, 0, photo.width, photo.height), keypoints=[], score=1.0, embedding=np.zeros(512, np.float32))
    sharp = sharpness(photo, whole)
    blurred = sharpness(photo.filter(ImageFilter.GaussianBlur(2)), whole)
    assert sharp > MIN_SHARPNESS > blurred, (sharp, blurred)
