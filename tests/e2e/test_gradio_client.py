"""The Create tab driven as a program would, through gradio_client's /generate endpoint."""

from __future__ import annotations

import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
from PIL import Image

from storage.pngmeta import read_params
from tests.support import http_json

pytestmark = pytest.mark.e2e

gradio_client = pytest.importorskip("gradio_client")
from gradio_client.exceptions import AppError  # noqa: E402


@pytest.fixture(scope="module")
def client(studio, tmp_path_factory):
    client = gradio_client.Client(studio.url, verbose=False, analytics_enabled=False,
                                  download_files=str(tmp_path_factory.mktemp("gradio-downloads")))
    yield client
    client.close()  # its heartbeat stream would otherwise hold the server's graceful shutdown


def generate(client, prompt: str, *, width=64, height=64, count=1, steps=2, seed=-1, aspect="1:1",
             style="none", sampler="euler", negative="", guidance=5.0, stages=(), keep=False):
    # The Create tab's form, in its order: prompt, negative, style, aspect, width, height, count, steps,
    # guidance, sampler, seed, stages, keep.
    return client.predict(prompt, negative, style, aspect, width, height, count, steps, guidance, sampler, seed,
                          list(stages), keep, api_name="/generate")


def test_generate_fills_the_gallery_and_stores_the_images(client, studio):
    word = f"lynx{uuid.uuid4().hex[:8]}"
    prompt = f"a {word} on a rock"
    gallery, status = generate(client, prompt, width=96, height=64, aspect="3:2", count=2, steps=2, seed=123)

    assert status == "Done: 2 image(s), 96×64 px, seed 123."
    assert [item["caption"] for item in gallery] == ["seed 123", "seed 124"]
    for item in gallery:
        path = Path(item["image"])
        assert path.is_file()
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.size == (96, 64)

    query = urllib.parse.urlencode({"search": word})
    status_code, assets = http_json("GET", f"{studio.url}/api/v1/assets?{query}")
    assert status_code == 200
    assert len(assets) == 2
    assert {a["params"]["seed"] for a in assets} == {123, 124}
    for asset in assets:
        assert asset["origin"] == "create"
        assert asset["prompt"] == prompt
        assert (asset["width"], asset["height"]) == (96, 64)
        assert asset["params"]["steps"] == 2

    # What the gallery showed is what was stored, parameters included.
    stored = {}
    for asset in assets:
        with urllib.request.urlopen(f"{studio.url}{asset['file_url']}", timeout=10) as response:
            stored[asset["params"]["seed"]] = response.read()
    for item, seed in zip(gallery, (123, 124)):
        shown = Path(item["image"]).read_bytes()
        assert shown == stored[seed]
        assert read_params(shown)["prompt"] == prompt


def test_random_seed_is_reported_and_kept(client, studio):
    word = f"ibis{uuid.uuid4().hex[:8]}"
    gallery, status = generate(client, f"an {word}", steps=1, width=32, height=32)
    assert len(gallery) == 1
    seed = int(gallery[0]["caption"].removeprefix("seed "))
    assert f"seed {seed}." in status
    _, assets = http_json("GET", f"{studio.url}/api/v1/assets?search={word}")
    assert [a["params"]["seed"] for a in assets] == [seed]


def test_empty_prompt_raises_a_readable_error(client, studio):
    with pytest.raises(AppError, match="prompt is empty"):
        generate(client, "   ")
