"""A user's LoRAs without a model: training images checked, safetensors files checked before anything loads
them, and the library's rows and files (owner isolation, shared files kept on delete)."""

import io
import json
import pickle
import zipfile

import numpy as np
import pytest
from PIL import Image, ImageDraw
from safetensors.numpy import save as save_numpy

from storage import repo
from storage.files import FileStore
from storage.loras import LoraError, LoraLibrary, attach_job, check_training_images, safetensors_keys
from storage.models import LoraState, Material

MIN_IMAGES, MAX_IMAGES = 5, 30


# --- synthetic pictures -------------------------------------------------------------------------------

# Each picture: a background colour and rectangles (box, colour) on a 128×128 canvas.
PICTURES = [
    ((240, 240, 240), [((10, 10, 60, 118), (200, 30, 30))]),
    ((20, 20, 60), [((70, 20, 120, 60), (250, 220, 40)), ((10, 80, 50, 120), (250, 250, 250))]),
    ((30, 120, 40), [((0, 0, 128, 40), (140, 200, 255))]),
    ((250, 250, 250), [((40, 40, 90, 90), (0, 0, 0)), ((100, 5, 125, 30), (0, 0, 0))]),
    ((120, 60, 20), [((5, 90, 123, 123), (230, 180, 120)), ((60, 5, 70, 85), (40, 20, 10))]),
    ((0, 0, 0), [((0, 64, 128, 128), (255, 255, 255)), ((20, 0, 40, 128), (128, 128, 128))]),
]


def picture(index: int, size: int = 128) -> Image.Image:
    background, boxes = PICTURES[index]
    image = Image.new("RGB", (128, 128), background)
    draw = ImageDraw.Draw(image)
    for box, colour in boxes:
        draw.rectangle(box, fill=colour)
    return image if size == 128 else image.resize((size, size), Image.Resampling.BILINEAR)


def encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def dataset(count: int = 6) -> list[tuple[str, bytes]]:
    return [(f"style-{i}.png", encoded(picture(i))) for i in range(count)]


# --- training images ----------------------------------------------------------------------------------


def test_distinct_pictures_are_all_usable():
    verdicts = check_training_images(dataset(), min_side=64)
    assert [v.name for v in verdicts] == [f"style-{i}.png" for i in range(6)]
    assert all(v.ok and v.reason == "" for v in verdicts), [v.reason for v in verdicts]
    assert all((v.width, v.height) == (128, 128) and v.upload is not None for v in verdicts)
    assert verdicts[0].to_dict() == {"name": "style-0.png", "ok": True, "reason": "", "caption": "", "width": 128,
                                     "height": 128, "notes": []}


def test_near_duplicates_are_flagged_with_the_first_picture_they_copy():
    files = dataset(3) + [
        ("again.jpg", encoded(picture(1), "JPEG", quality=80)),  # the same picture re-saved as JPEG
        ("smaller.png", encoded(picture(2, size=120))),  # the same picture slightly resized
    ]
    verdicts = {v.name: v for v in check_training_images(files, min_side=64)}
    assert [name for name, v in verdicts.items() if v.ok] == ["style-0.png", "style-1.png", "style-2.png"]
    assert verdicts["again.jpg"].reason.startswith("Duplicate of style-1.png")
    assert verdicts["smaller.png"].reason.startswith("Duplicate of style-2.png")
    assert verdicts["again.jpg"].upload is None


def test_small_and_unreadable_files_are_flagged():
    files = dataset(2) + [("tiny.png", encoded(Image.new("RGB", (20, 20), "red"))),
                          ("x.png", np.random.default_rng(0).bytes(500))]
    verdicts = {v.name: v for v in check_training_images(files, min_side=32)}
    assert verdicts["style-0.png"].ok and verdicts["style-1.png"].ok
    tiny = verdicts["tiny.png"]
    assert not tiny.ok and tiny.reason.startswith("Too small: 20×20 px") and "at least 32 px" in tiny.reason
    assert (tiny.width, tiny.height) == (20, 20)
    assert not verdicts["x.png"].ok and verdicts["x.png"].reason.startswith("Unreadable")


def test_captions_come_from_txt_files_and_the_captions_table_wins():
    files = dataset(3) + [("style-0.txt", b"  a red pillar on white \n"), ("style-1.txt", "塔 at night".encode()),
                          ("orphan.txt", b"no picture of this name")]
    verdicts = check_training_images(files, min_side=64, captions={"style-1": "from the table", "style-2.png": "by file name"})
    assert [v.name for v in verdicts] == ["style-0.png", "style-1.png", "style-2.png"]  # .txt files are no images
    assert [v.caption for v in verdicts] == ["a red pillar on white", "from the table", "by file name"]
    long = check_training_images(dataset(1), min_side=64, captions={"style-0": "word " * 100})[0]
    assert len(long.caption) == 300


# --- safetensors files --------------------------------------------------------------------------------


def lora_file(**extra) -> bytes:
    tensors = {"unet.mid_block.attn1.to_q.lora_A.weight": np.ones((4, 8), dtype=np.float32),
               "unet.mid_block.attn1.to_q.lora_B.weight": np.zeros((8, 4), dtype=np.float16), **extra}
    return save_numpy(tensors, metadata={"format": "pt"})


def torch_zip_checkpoint() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"a": 1}, protocol=2))
    return buffer.getvalue()


def test_valid_safetensors_declare_their_tensors():
    header = safetensors_keys(lora_file())
    assert set(header) == {"unet.mid_block.attn1.to_q.lora_A.weight", "unet.mid_block.attn1.to_q.lora_B.weight"}
    assert header["unet.mid_block.attn1.to_q.lora_A.weight"]["shape"] == [4, 8]
    assert header["unet.mid_block.attn1.to_q.lora_B.weight"]["dtype"] == "F16"
    assert safetensors_keys(save_numpy({})) == {}


@pytest.mark.parametrize("data, message", [
    (pickle.dumps({"a": 1}, protocol=4), "Only .safetensors LoRA files are accepted: this file is a Python pickle"),
    (pickle.dumps({"a": 1}, protocol=2), "this file is a Python pickle"),
    (torch_zip_checkpoint(), "Only .safetensors LoRA files are accepted: this file is a PyTorch checkpoint"),
    (b"PK\x03\x04" + b"\0" * 40, "a PyTorch checkpoint .*safetensors"),
    (b"\x01\x02", "too short to be a safetensors file"),
    (lora_file()[:20], "header length does not fit the file"),
    (lora_file()[:-4], "points outside the file; the file is damaged or cut off"),
    ((2).to_bytes(8, "little") + b"[]", "header is not a table of tensors"),
    ((2).to_bytes(8, "little") + b"\xff\xfe", "header is not JSON"),
])
def test_files_that_are_not_safetensors_are_refused(data, message):
    with pytest.raises(LoraError, match=message):
        safetensors_keys(data)


def test_a_tensor_of_no_known_type_is_refused():
    data = lora_file()
    header_size = int.from_bytes(data[:8], "little")
    header = data[8:8 + header_size].replace(b'"F16"', b'"X16"')
    with pytest.raises(LoraError, match="has no valid type; the file is damaged"):
        safetensors_keys(data[:8] + header + data[8 + header_size:])


def header_only(tensors: dict) -> bytes:
    header = json.dumps(tensors).encode()
    return len(header).to_bytes(8, "little") + header + b"\0" * 4


@pytest.mark.parametrize("offsets", [[0], ["0", "4"], 4])
def test_malformed_data_offsets_are_refused_as_damaged(offsets):
    data = header_only({"x.lora_A.weight": {"dtype": "F32", "shape": [1], "data_offsets": offsets}})
    with pytest.raises(LoraError, match="damaged"):
        safetensors_keys(data)


# --- the library --------------------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path):
    return FileStore(tmp_path / "files")


@pytest.fixture
def library(db, files):
    return LoraLibrary(db, files, max_upload_bytes=10_000)


@pytest.fixture
def owners(db):
    with db.session() as session:
        return repo.ensure_user(session).id, repo.ensure_user(session, "someone-else").id


def stored(files: FileStore, extension: str) -> list[str]:
    return sorted(p.name for p in files.root.rglob(f"*.{extension}"))


def train(library, owner, count=5, **kwargs):
    verdicts = check_training_images(dataset(count), min_side=64, captions={"style-0": "a red pillar"})
    return library.create_for_training(owner, kwargs.pop("name", "Ink wash"), kwargs.pop("trigger", "inkwash"), "tiny",
                                       "/models/tiny/base", verdicts, MIN_IMAGES, MAX_IMAGES)


def test_training_needs_enough_usable_images(library, files, owners):
    with pytest.raises(LoraError, match=r"^4 usable image\(s\): training needs at least 5"):
        train(library, owners[0], count=4)
    verdicts = check_training_images(dataset(4) + [("x.png", b"junk"), ("dup.jpg", encoded(picture(0), "JPEG"))], min_side=64)
    with pytest.raises(LoraError, match=r"^4 usable image\(s\) \(2 refused\): training needs at least 5"):
        library.create_for_training(owners[0], "x", "", "tiny", "base", verdicts, MIN_IMAGES, MAX_IMAGES)
    with pytest.raises(LoraError, match="6 images were given; the limit is 5"):
        library.create_for_training(owners[0], "x", "", "tiny", "base", check_training_images(dataset(6), 64), 5, 5)
    assert stored(files, "png") == [] and library.list(owners[0]) == []


def test_five_images_are_stored_then_the_row_waits_for_its_job(library, files, owners):
    lora = train(library, owners[0], name="  Ink   wash  ", trigger=" ink  wash ")
    # "new" until a train job is attached (attach_job moves it to "training").
    assert lora.state == LoraState.NEW == "new" and lora.kind == "style"
    assert lora.name == "Ink wash" and lora.trigger == "ink wash" and lora.profile == "tiny"
    assert lora.file_hash is None and not lora.usable
    assert len(lora.dataset) == 5 and len(stored(files, "png")) == 5
    assert [item["name"] for item in lora.dataset] == [f"style-{i}.png" for i in range(5)]
    assert lora.dataset[0]["caption"] == "a red pillar" and lora.dataset[1]["caption"] == ""
    for item in lora.dataset:
        assert files.exists(item["hash"], "png") and (item["width"], item["height"]) == (128, 128)
    assert np.array_equal(np.asarray(library.training_image(lora.dataset[0]["hash"])), np.asarray(picture(0)))
    assert [v.id for v in library.list(owners[0])] == [lora.id]


def test_uploads_must_be_small_safetensors_loras(library, files, owners):
    owner = owners[0]
    with pytest.raises(LoraError, match="Only .safetensors LoRA files are accepted: this file is named 'style.ckpt'"):
        library.upload(owner, pickle.dumps({"a": 1}, protocol=4), "style.ckpt", None, "tiny", "base")
    with pytest.raises(LoraError, match="^Only .safetensors LoRA files are accepted.$"):
        library.upload(owner, lora_file(), "style.zip", None, "tiny", "base")
    with pytest.raises(LoraError, match="this file is a Python pickle"):
        library.upload(owner, pickle.dumps({"a": 1}, protocol=4), "renamed.safetensors", None, "tiny", "base")
    with pytest.raises(LoraError, match="limited to 0 MB"):
        library.upload(owner, b"\0" * 10_001, "big.safetensors", None, "tiny", "base")
    with pytest.raises(LoraError, match="The file is empty"):
        library.upload(owner, b"", "empty.safetensors", None, "tiny", "base")
    whole_model = save_numpy({"unet.conv_in.weight": np.zeros((4, 4), dtype=np.float32)})
    with pytest.raises(LoraError, match="holds 1 tensor\\(s\\) but no LoRA weights"):
        library.upload(owner, whole_model, "model.safetensors", None, "tiny", "base")
    assert stored(files, "safetensors") == [] and library.list(owner) == []

    lora = library.upload(owner, lora_file(), "dir/Pixel Hero.safetensors", None, "tiny", "base", weight=0.8)
    assert lora.state == LoraState.CHECKING == "checking" and lora.kind == "uploaded"
    assert lora.name == "Pixel Hero" and lora.default_weight == 0.8 and lora.file_size == len(lora_file())
    assert files.path(lora.file_hash, "safetensors").read_bytes() == lora_file()
    assert library.file_path(lora) == files.path(lora.file_hash, "safetensors")
    assert library.upload(owner, lora_file(), "x.safetensors", "  My   LoRA ", "tiny", "base").name == "My LoRA"


def test_another_user_cannot_see_change_or_delete_a_lora(library, files, owners):
    mine, theirs = owners
    lora = library.upload(mine, lora_file(), "mine.safetensors", None, "tiny", "base")
    library.finish(lora.id, LoraState.READY)
    assert library.get(theirs, lora.id) is None and library.list(theirs) == []
    with pytest.raises(LookupError, match=f"No LoRA {lora.id}"):
        library.update(theirs, lora.id, name="stolen")
    with pytest.raises(LookupError):
        library.delete(theirs, lora.id)
    kept = library.get(mine, lora.id)
    assert kept.name == "mine" and kept.usable and files.exists(lora.file_hash, "safetensors")

    updated = library.update(mine, lora.id, name="renamed", default_weight=-1.5)
    assert (updated.name, updated.default_weight) == ("renamed", -1.5)
    with pytest.raises(LoraError, match="between -2 and 2"):
        library.update(mine, lora.id, default_weight=2.5)
    assert library.list(mine, profile="tiny", usable_only=True)[0].id == lora.id
    assert library.list(mine, profile="sdxl") == []


def test_delete_refuses_while_training_or_checking(db, library, owners):
    owner = owners[0]
    training = train(library, owner)
    with db.session() as session:
        attach_job(session, training.id, "job-1", LoraState.TRAINING, settings={"rank": 8})
        session.commit()
    assert library.get(owner, training.id).state == "training"
    assert library.get(owner, training.id).settings == {"rank": 8}
    with pytest.raises(LoraError, match="still training: cancel its job first"):
        library.delete(owner, training.id)
    checking = library.upload(owner, lora_file(), "a.safetensors", None, "tiny", "base")
    with pytest.raises(LoraError, match="still checking"):
        library.delete(owner, checking.id)
    assert {v.id for v in library.list(owner)} == {training.id, checking.id}
    fresh = train(library, owner, name="no job yet")  # "new" is not busy
    library.delete(owner, fresh.id)
    assert library.get(owner, fresh.id) is None


def test_delete_removes_the_files_nothing_else_uses(db, library, files, owners):
    owner = owners[0]
    lora = train(library, owner)
    library.finish(lora.id, LoraState.READY, weights=lora_file())
    lora = library.get(owner, lora.id)
    assert lora.usable and files.exists(lora.file_hash, "safetensors")
    shared_image = lora.dataset[0]["hash"]
    with db.session() as session:  # a material made from the same picture
        session.add(Material(owner_id=owner, name="pillar", file_hash=shared_image, width=128, height=128))
        session.commit()

    library.delete(owner, lora.id)
    assert library.get(owner, lora.id) is None
    assert not files.exists(lora.file_hash, "safetensors")
    assert files.exists(shared_image, "png")
    assert [files.exists(item["hash"], "png") for item in lora.dataset[1:]] == [False] * 4


def test_delete_keeps_weights_and_images_another_lora_uses(library, files, owners):
    owner = owners[0]
    first, second = train(library, owner, name="first"), train(library, owner, name="second")
    assert [item["hash"] for item in first.dataset] == [item["hash"] for item in second.dataset]
    for lora in (first, second):
        library.finish(lora.id, LoraState.FAILED, note="cancelled")
    upload = library.upload(owner, lora_file(), "a.safetensors", None, "tiny", "base")
    again = library.upload(owner, lora_file(), "b.safetensors", None, "tiny", "base")
    for lora in (upload, again):
        library.finish(lora.id, LoraState.REJECTED, note="does not fit")

    library.delete(owner, first.id)
    assert all(files.exists(item["hash"], "png") for item in second.dataset)
    library.delete(owner, upload.id)
    assert files.exists(again.file_hash, "safetensors")
    library.delete(owner, second.id)
    library.delete(owner, again.id)
    assert stored(files, "png") == [] and stored(files, "safetensors") == []
