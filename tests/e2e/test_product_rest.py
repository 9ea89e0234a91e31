"""Product synthesis through the REST API: the material library, cut-outs, mask corrections, layered product
pictures and re-runs, driven over HTTP against the running studio (tiny profile, real worker)."""

from __future__ import annotations

import io
import json
import time
import uuid
import zipfile

import httpx
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from storage.pngmeta import read_params

pytestmark = pytest.mark.e2e

BACKGROUND = (240, 240, 240)
PHOTO_SIZE = (160, 200)
CANVAS = (96, 128)
SCENES = ["studio_seamless", "podium"]
SEED = 31337
LAYER_STAGES = {"background", "shadow", "product", "mask", "manifest", "psd", "zip"}


# --- synthetic photos ------------------------------------------------------------------------------------


def draw_bottle(size: tuple[int, int] = PHOTO_SIZE) -> tuple[Image.Image, np.ndarray]:
    """A blue bottle body with a red cap on light grey, and its exact mask (True on the bottle)."""
    width, height = size
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[:] = BACKGROUND
    mask = np.zeros((height, width), dtype=bool)
    body = (slice(int(height * 0.3), int(height * 0.9)), slice(int(width * 0.3), int(width * 0.7)))
    cap = (slice(int(height * 0.15), int(height * 0.3)), slice(int(width * 0.42), int(width * 0.58)))
    pixels[body] = (40, 80, 200)
    pixels[cap] = (200, 40, 40)
    mask[body] = True
    mask[cap] = True
    return Image.fromarray(pixels, mode="RGB"), mask


def png(image: Image.Image, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **save)
    return buffer.getvalue()


def bottle_png() -> tuple[bytes, np.ndarray]:
    image, mask = draw_bottle()
    return png(image), mask


def mask_png(mask: np.ndarray) -> bytes:
    return png(Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L"))


def as_mask(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L")) >= 128


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


# --- HTTP helpers ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http(studio):
    with httpx.Client(base_url=f"{studio.url}/api/v1", timeout=30) as client:
        yield client


def upload(http, data: bytes, filename: str = "bottle.png", **form) -> httpx.Response:
    mimes = {"png": "image/png", "jpg": "image/jpeg", "gif": "image/gif"}
    mime = mimes.get(filename.rsplit(".", 1)[-1], "application/octet-stream")
    return http.post("/materials", files={"file": (filename, data, mime)}, data=form)


def uploaded(http, data: bytes, filename: str = "bottle.png", **form) -> dict:
    response = upload(http, data, filename, **form)
    assert response.status_code == 201, response.text
    return response.json()


def submit(http, kind: str, params: dict) -> httpx.Response:
    return http.post("/jobs", json={"kind": kind, "params": params})


def run_job(studio, http, kind: str, params: dict, timeout: float = 60) -> dict:
    response = submit(http, kind, params)
    assert response.status_code == 202, response.text
    return studio.wait_job(response.json()["id"], timeout=timeout)


def cut_out(studio, http, material_id: str) -> dict:
    done = run_job(studio, http, "cutout", {"material_id": material_id})
    assert done["state"] == "succeeded", done["error"]
    return done


def detail(response: httpx.Response) -> str:
    return str(response.json().get("detail"))


def product_params(material_id: str, **extra) -> dict:
    params = {"material_id": material_id, "scenes": SCENES, "canvas_format": "custom", "width": CANVAS[0],
              "height": CANVAS[1], "variants": 1, "seed": SEED, "steps": 2}
    params.update(extra)
    return params


# --- shared work: one cut-out bottle and one product job -------------------------------------------------


@pytest.fixture(scope="module")
def bottle(studio, http):
    """A bottle photo uploaded and cut out: (material after the cut-out, known mask)."""
    data, mask = bottle_png()
    material = uploaded(http, data, name=unique("bottle "), tags="bottle")
    cut_out(studio, http, material["id"])
    return http.get(f"/materials/{material['id']}").json(), mask


@pytest.fixture(scope="module")
def product_job(studio, http, bottle):
    """Two scenes × one variant of the cut-out bottle on a small custom canvas, finished."""
    material, _ = bottle
    started = time.monotonic()
    done = run_job(studio, http, "product", product_params(material["id"]), timeout=90)
    assert done["state"] == "succeeded", done["error"]
    done["elapsed"] = time.monotonic() - started
    return done


def asset_bytes(http, asset_id: str) -> bytes:
    response = http.get(f"/assets/{asset_id}/file")
    assert response.status_code == 200, response.text
    return response.content


def layers_of(http, composite_id: str) -> dict[str, dict]:
    response = http.get(f"/assets/{composite_id}/layers")
    assert response.status_code == 200, response.text
    children = response.json()
    by_stage = {a["stage"]: a for a in children}
    assert len(by_stage) == len(children), [a["stage"] for a in children]
    return by_stage


# --- 1. upload, list, patch, file ------------------------------------------------------------------------


def test_upload_list_patch_and_file(http):
    data, _ = bottle_png()
    name, tag = unique("Blue bottle "), unique("tag")
    response = upload(http, data, name=name, kind="product", tags=f"{tag}, Shampoo ,{tag}")
    assert response.status_code == 201, response.text
    material = response.json()
    assert material["name"] == name and material["kind"] == "product"
    assert material["tags"] == [tag, "shampoo"]
    assert material["notes"] == []
    assert (material["width"], material["height"]) == PHOTO_SIZE
    assert material["has_alpha"] is False
    assert material["mask_source"] is None and material["mask_url"] is None

    by_tag = http.get("/materials", params={"tag": tag}).json()
    assert [m["id"] for m in by_tag] == [material["id"]]
    by_search = http.get("/materials", params={"search": name.split()[-1]}).json()
    assert [m["id"] for m in by_search] == [material["id"]]
    assert material["id"] in [m["id"] for m in http.get("/materials", params={"kind": "product"}).json()]
    assert material["id"] not in [m["id"] for m in http.get("/materials", params={"kind": "logo"}).json()]

    new_name, new_tag = unique("Renamed "), unique("retag")
    response = http.patch(f"/materials/{material['id']}", json={"name": new_name, "tags": [new_tag]})
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["name"] == new_name and patched["tags"] == [new_tag]
    assert http.get("/materials", params={"tag": tag}).json() == []
    assert [m["id"] for m in http.get("/materials", params={"tag": new_tag}).json()] == [material["id"]]
    assert http.get(f"/materials/{material['id']}").json()["name"] == new_name

    response = http.get(material["file_url"].removeprefix("/api/v1"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as image:
        assert image.format == "PNG" and image.size == PHOTO_SIZE

    assert http.get(f"/materials/{material['id']}/mask").status_code == 404


# --- 2. bad and unusual uploads --------------------------------------------------------------------------


def test_bad_uploads_are_refused_with_the_reason(http):
    data, _ = bottle_png()
    cases = [
        (b"just some text, not a picture\n" * 20, "notes.png", {}, "not an image"),
        (data[: len(data) // 2], "cut.png", {}, "damaged"),
        (png(Image.new("RGB", (20, 20), (10, 10, 200))), "tiny.png", {}, "at least 64"),
        (data, "bottle.png", {"kind": "poster"}, "Unknown material kind"),
    ]
    for payload, filename, form, words in cases:
        response = upload(http, payload, filename, **form)
        assert response.status_code == 422, (filename, response.text)
        assert words in detail(response), (filename, detail(response))


def test_exif_rotated_animated_and_cmyk_uploads_are_normalised(http):
    # A 120×80 JPEG whose EXIF says "turn 90° clockwise to show it": stored upright, 80×120.
    image = Image.new("RGB", (120, 80), BACKGROUND)
    image.paste((40, 80, 200), (10, 10, 60, 70))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    rotated = uploaded(http, buffer.getvalue(), "rotated.jpg")
    assert (rotated["width"], rotated["height"]) == (80, 120)
    assert any("EXIF" in note for note in rotated["notes"]), rotated["notes"]
    with Image.open(io.BytesIO(http.get(f"/materials/{rotated['id']}/file").content)) as stored:
        assert stored.size == (80, 120)

    frames = [Image.new("RGB", (96, 96), colour) for colour in ((200, 40, 40), (40, 200, 40), (40, 40, 200))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    animated = uploaded(http, buffer.getvalue(), "spin.gif")
    assert (animated["width"], animated["height"]) == (96, 96)
    assert any("first" in note and "frame" in note for note in animated["notes"]), animated["notes"]

    buffer = io.BytesIO()
    Image.new("CMYK", (80, 72), (0, 120, 200, 10)).save(buffer, format="JPEG")
    cmyk = uploaded(http, buffer.getvalue(), "print.jpg")
    assert (cmyk["width"], cmyk["height"]) == (80, 72)
    assert any("CMYK" in note for note in cmyk["notes"]), cmyk["notes"]
    with Image.open(io.BytesIO(http.get(f"/materials/{cmyk['id']}/file").content)) as stored:
        assert stored.mode == "RGB"


# --- 3. cut-outs -----------------------------------------------------------------------------------------


def test_cutout_finds_the_bottle(http, bottle):
    material, known = bottle
    assert material["mask_source"] == "segmenter"
    assert material["mask_note"] is None
    assert material["mask_url"] == f"/api/v1/materials/{material['id']}/mask"
    response = http.get(f"/materials/{material['id']}/mask")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    found = as_mask(response.content)
    assert found.shape == known.shape
    assert iou(found, known) >= 0.95, iou(found, known)


def test_cutout_of_a_transparent_png_uses_its_alpha(studio, http):
    image, known = draw_bottle()
    rgba = image.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.where(known, 255, 0).astype(np.uint8), mode="L"))
    material = uploaded(http, png(rgba), "cutout.png")
    assert material["has_alpha"] is True
    cut_out(studio, http, material["id"])
    material = http.get(f"/materials/{material['id']}").json()
    assert material["mask_source"] == "alpha"
    assert iou(as_mask(http.get(f"/materials/{material['id']}/mask").content), known) == 1.0


def test_empty_photo_cutout_fails_and_a_product_job_needs_a_mask(studio, http):
    material = uploaded(http, png(Image.new("RGB", PHOTO_SIZE, BACKGROUND)), "empty.png", name=unique("empty "))
    done = run_job(studio, http, "cutout", {"material_id": material["id"]})
    assert done["state"] == "failed"
    assert "No product was found" in done["error"], done["error"]
    assert http.get(f"/materials/{material['id']}").json()["mask_source"] is None

    response = submit(http, "product", product_params(material["id"]))
    assert response.status_code == 422, response.text
    assert "no product mask" in detail(response) and "cut it out" in detail(response), detail(response)


# --- 4. mask corrections ---------------------------------------------------------------------------------


def test_put_mask_replaces_it_and_refuses_bad_masks(studio, http):
    data, known = bottle_png()
    material = uploaded(http, data, name=unique("corrected "))
    cut_out(studio, http, material["id"])

    corrected = known.copy()
    corrected[: int(PHOTO_SIZE[1] * 0.3)] = False  # the cap erased
    response = http.put(f"/materials/{material['id']}/mask",
                        files={"file": ("mask.png", mask_png(corrected), "image/png")})
    assert response.status_code == 200, response.text
    assert response.json()["mask_source"] == "brush"
    assert (as_mask(http.get(f"/materials/{material['id']}/mask").content) == corrected).all()

    # An RGBA mask counts by its opacity.
    rgba = Image.new("RGBA", PHOTO_SIZE, (0, 0, 0, 0))
    rgba.putalpha(Image.fromarray(np.where(known, 255, 0).astype(np.uint8), mode="L"))
    response = http.put(f"/materials/{material['id']}/mask", files={"file": ("mask.png", png(rgba), "image/png")})
    assert response.status_code == 200, response.text
    assert (as_mask(http.get(f"/materials/{material['id']}/mask").content) == known).all()

    wrong = np.zeros((100, 100), dtype=bool)
    wrong[20:80, 30:70] = True
    response = http.put(f"/materials/{material['id']}/mask", files={"file": ("mask.png", mask_png(wrong), "image/png")})
    assert response.status_code == 422, response.text
    assert "100×100" in detail(response) and f"{PHOTO_SIZE[0]}×{PHOTO_SIZE[1]}" in detail(response), detail(response)

    black = np.zeros((PHOTO_SIZE[1], PHOTO_SIZE[0]), dtype=bool)
    response = http.put(f"/materials/{material['id']}/mask", files={"file": ("mask.png", mask_png(black), "image/png")})
    assert response.status_code == 422, response.text
    assert "No product was found" in detail(response), detail(response)

    response = http.put(f"/materials/{material['id']}/mask", files={"file": ("mask.png", b"not a png", "image/png")})
    assert response.status_code == 422, response.text
    # The refused masks left the last good one in place.
    after = http.get(f"/materials/{material['id']}").json()
    assert after["mask_source"] == "brush"
    assert (as_mask(http.get(f"/materials/{material['id']}/mask").content) == known).all()


# --- 5. the product job and its layered pictures ---------------------------------------------------------


def test_product_job_makes_one_composite_per_scene(http, product_job):
    done = product_job
    assert done["kind"] == "product" and done["progress"] == 1.0 and done["error"] is None
    assert len(done["asset_ids"]) == 2 and len(set(done["asset_ids"])) == 2
    outputs = done["params"]["outputs"]
    assert [o["index"] for o in outputs] == [0, 1]
    for asset_id, scene_name, output in zip(done["asset_ids"], SCENES, outputs):
        asset = http.get(f"/assets/{asset_id}").json()
        assert asset["kind"] == "image" and asset["stage"] == "final" and asset["parent_id"] is None
        assert (asset["width"], asset["height"]) == CANVAS
        assert asset["params"]["scene"]["name"] == scene_name
        data = asset_bytes(http, asset_id)
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "PNG" and image.size == CANVAS
        embedded = read_params(data)
        assert embedded["scene"]["name"] == scene_name
        assert embedded["seed"] == output["seed"] == SEED
        assert embedded["kind"] == "product" and embedded["job_id"] == done["id"]
        assert (embedded["width"], embedded["height"]) == CANVAS
        assert embedded["rerun_of"] is None


def test_layers_zip_psd_and_untouched_product_pixels(http, product_job):
    from psd_tools import PSDImage

    for composite_id in product_job["asset_ids"]:
        layers = layers_of(http, composite_id)
        assert set(layers) == LAYER_STAGES
        for stage in ("background", "shadow", "product", "mask"):
            assert layers[stage]["kind"] == "layer"
        assert {layers[s]["kind"] for s in ("manifest", "psd", "zip")} == {"manifest", "psd", "zip"}
        assert all(a["parent_id"] == composite_id for a in layers.values())

        manifest = json.loads(asset_bytes(http, layers["manifest"]["id"]))
        assert manifest["canvas"] == {"width": CANVAS[0], "height": CANVAS[1]}
        box = manifest["product_box"]

        archive = zipfile.ZipFile(io.BytesIO(asset_bytes(http, layers["zip"]["id"])))
        names = set(archive.namelist())
        assert names == {"background.png", "shadow.png", "product.png", "mask.png", "composite.png", "manifest.json"}
        assert json.loads(archive.read("manifest.json"))["product_box"] == box
        for name in names - {"manifest.json"}:
            with Image.open(io.BytesIO(archive.read(name))) as image:
                assert image.size == CANVAS, name

        psd = PSDImage.open(io.BytesIO(asset_bytes(http, layers["psd"]["id"])))
        assert psd.size == CANVAS
        by_name = {layer.name: layer for layer in psd}
        assert {"Background", "Product", "Mask"} <= set(by_name)
        product_layer = by_name["Product"]
        assert (product_layer.left, product_layer.top) == (box["left"], box["top"])
        assert (product_layer.width, product_layer.height) == (box["width"], box["height"])

        with Image.open(io.BytesIO(asset_bytes(http, composite_id))) as image:
            composite = np.asarray(image.convert("RGB"))
        with Image.open(io.BytesIO(asset_bytes(http, layers["product"]["id"]))) as image:
            assert image.mode == "RGBA" and image.size == CANVAS
            product = np.asarray(image)
        mask = as_mask(asset_bytes(http, layers["mask"]["id"]))
        assert mask.shape == (CANVAS[1], CANVAS[0])
        ys, xs = np.nonzero(mask)
        assert (xs.min(), ys.min()) == (box["left"], box["top"])
        assert (xs.max() + 1, ys.max() + 1) == (box["left"] + box["width"], box["top"] + box["height"])
        core = ndimage.binary_erosion(mask, iterations=2)
        assert core.sum() > 100
        assert (product[core][:, 3] == 255).all()
        assert (composite[core] == product[core][:, :3]).all()
        # The bottle's own colours survive: its body is blue and its cap red.
        colours = {tuple(c) for c in composite[core]}
        assert (40, 80, 200) in colours and (200, 40, 40) in colours


# --- 6. re-run on another canvas -------------------------------------------------------------------------


def test_rerun_in_the_9_16_format(studio, http, product_job):
    source_id = product_job["asset_ids"][1]
    source = http.get(f"/assets/{source_id}").json()

    # A custom canvas needs its width and height.
    response = http.post(f"/assets/{source_id}/rerun", json={"canvas_format": "custom"})
    assert response.status_code == 422, response.text
    assert "width and a height" in detail(response)

    started = time.monotonic()
    response = http.post(f"/assets/{source_id}/rerun", json={"canvas_format": "9:16"})
    assert response.status_code == 202, response.text
    submitted = response.json()
    assert submitted["kind"] == "product" and submitted["state"] == "queued"
    done = studio.wait_job(submitted["id"], timeout=120)
    elapsed = time.monotonic() - started
    assert done["state"] == "succeeded", done["error"]
    assert elapsed < 60, f"a 1080×1920 re-run took {elapsed:.0f} s on the tiny profile"
    (composite_id,) = done["asset_ids"]
    asset = http.get(f"/assets/{composite_id}").json()
    assert (asset["width"], asset["height"]) == (1080, 1920)
    embedded = read_params(asset_bytes(http, composite_id))
    assert embedded["canvas_format"] == "9:16" and (embedded["width"], embedded["height"]) == (1080, 1920)
    assert embedded["scene"]["name"] == source["params"]["scene"]["name"] == SCENES[1]
    assert embedded["seed"] == source["params"]["seed"]
    assert embedded["rerun_of"] == source_id
    assert embedded["material_hash"] == source["params"]["material_hash"]
    assert embedded["mask_hash"] == source["params"]["mask_hash"]
    assert set(layers_of(http, composite_id)) == LAYER_STAGES

    # Only a product picture can be re-run.
    layer_id = layers_of(http, source_id)["background"]["id"]
    response = http.post(f"/assets/{layer_id}/rerun", json={"canvas_format": "1:1"})
    assert response.status_code == 422, response.text
    assert http.post(f"/assets/{uuid.uuid4().hex}/rerun", json={"canvas_format": "1:1"}).status_code == 404


# --- 7. validation at submit -----------------------------------------------------------------------------


def test_product_requests_are_checked_at_submit(http, bottle):
    material, _ = bottle
    cases = [
        (product_params(material["id"], scenes=["moon_base"]), "Unknown scene moon_base"),
        (product_params(material["id"], scenes=[]), "Choose at least one scene"),
        (product_params(material["id"], scenes=["studio_seamless", "studio_dark", "podium", "pastel_blocks",
                                                "luxury_gold"], variants=4), "at most 16"),
        (product_params(uuid.uuid4().hex), "No material"),
        (product_params(material["id"], canvas_format="3:2"), "Unknown canvas format"),
        (product_params(material["id"], width=None), "width and a height"),
        (product_params(""), "Pick the product photo"),
    ]
    for params, words in cases:
        response = submit(http, "product", params)
        assert response.status_code == 422, (params, response.text)
        assert words in detail(response), (words, detail(response))
    response = submit(http, "cutout", {"material_id": uuid.uuid4().hex})
    assert response.status_code == 422 and "No material" in detail(response), response.text


# --- 8. deletion -----------------------------------------------------------------------------------------


def test_deleting_a_material(http):
    image = Image.new("RGB", (90, 90), BACKGROUND)
    image.paste((10, 160, 60), (20, 20, 70, 80))  # a file no other material shares
    material = uploaded(http, png(image), name=unique("doomed "))
    file_path = material["file_url"].removeprefix("/api/v1")
    assert http.get(file_path).status_code == 200
    assert http.delete(f"/materials/{material['id']}").status_code == 204
    assert material["id"] not in [m["id"] for m in http.get("/materials").json()]
    assert http.get(f"/materials/{material['id']}").status_code == 404
    assert http.get(file_path).status_code == 404
    assert http.delete(f"/materials/{material['id']}").status_code == 404
