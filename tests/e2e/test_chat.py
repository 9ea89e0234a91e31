"""The creation chat against the running studio: REST (job kind chat_turn and the conversation routes)
and gradio_client (the tab's own endpoints). Real worker, tiny profile, tiny LLM and tiny CLIP."""

from __future__ import annotations

import pytest

from tests.support import http_json

pytestmark = pytest.mark.e2e

gradio_client = pytest.importorskip("gradio_client")


def api(studio, path: str) -> str:
    return f"{studio.url}/api/v1{path}"


def chat(studio, **params) -> dict:
    """Send one turn through REST and wait for it; returns the finished job."""
    status, job = http_json("POST", api(studio, "/jobs"), {"kind": "chat_turn", "params": params})
    assert status == 202, job
    done = studio.wait_job(job["id"], timeout=120)
    assert done["state"] == "succeeded", done["error"]
    return dict(done, params=job["params"])


def conversation(studio, conv_id: str) -> dict:
    status, body = http_json("GET", api(studio, f"/conversations/{conv_id}"))
    assert status == 200, body
    return body


def turn(conv: dict, turn_id: str) -> dict:
    return next(t for t in conv["turns"] if t["id"] == turn_id)


def assert_ranked(candidates: list[dict]) -> None:
    scores = [c["score"] for c in candidates]
    assert None not in scores and scores == sorted(scores, reverse=True)


def test_a_four_turn_conversation_over_rest_keeps_the_seed_and_ranks_candidates(studio):
    first = chat(studio, text="画一只猫坐在窗台上", count=3)
    conv_id = first["params"]["conversation_id"]
    turn_ids = [first["params"]["turn_id"]]
    for text in ["改成黄昏", "不要人物", "换成水彩风格"]:
        turn_ids.append(chat(studio, text=text, conversation_id=conv_id, count=3)["params"]["turn_id"])
    conv = conversation(studio, conv_id)
    assert conv["path"] == turn_ids and conv["title"] == "画一只猫坐在窗台上"
    turns = [turn(conv, t) for t in turn_ids]
    assert len({t["seed"] for t in turns}) == 1  # the seed is kept across turns
    for t in turns:
        assert len(t["candidates"]) == 3
        assert_ranked(t["candidates"])
        assert t["refined"]["source"] == "rules" and t["refined"]["fallback"]  # the tiny LLM's noise falls back
    last = turns[-1]["refined"]
    assert "cat" in last["prompt"] and "dusk" in last["prompt"] and last["style"] == "watercolor"
    assert "people" in last["negative_prompt"]
    assert {"from": "黄昏", "slot": "time"}.items() <= turns[1]["refined"]["mapping"][0].items()

    # Every candidate is an asset linked to its turn's job, with its score stored.
    best = turns[-1]["candidates"][0]
    status, asset = http_json("GET", api(studio, f"/assets/{best['asset_id']}"))
    assert status == 200 and asset["job_id"] == turns[-1]["job"]["id"] and asset["origin"] == "api"
    assert asset["score"] == pytest.approx(best["score"]) and asset["params"]["seed"] == best["seed"]
    assert asset["params"]["style"] == "watercolor" and "dusk" in asset["prompt"]

    # Undo, then branch from the first turn: the tree keeps every turn.
    status, undone = http_json("POST", api(studio, f"/conversations/{conv_id}/undo"))
    assert status == 200 and undone["path"] == turn_ids[:3]
    status, moved = http_json("PATCH", api(studio, f"/conversations/{conv_id}"),
                              {"move_head": True, "head_turn_id": turn_ids[0], "title": "Cat at the window"})
    assert status == 200 and moved["path"] == turn_ids[:1] and moved["title"] == "Cat at the window"
    branch = chat(studio, text="换成夜晚", conversation_id=conv_id, count=2)
    conv = conversation(studio, conv_id)
    assert conv["path"] == [turn_ids[0], branch["params"]["turn_id"]] and len(conv["turns"]) == 5
    night = turn(conv, branch["params"]["turn_id"])
    assert "night" in night["refined"]["prompt"] and "dusk" not in night["refined"]["prompt"]
    assert night["seed"] == turns[0]["seed"]
    status, listing = http_json("GET", api(studio, "/conversations"))
    assert any(c["id"] == conv_id and c["title"] == "Cat at the window" for c in listing)


def test_variations_and_tweaks_start_from_the_chosen_image(studio):
    first = chat(studio, text="a lighthouse on a cliff", count=2)
    conv_id, turn_id = first["params"]["conversation_id"], first["params"]["turn_id"]
    picked = turn(conversation(studio, conv_id), turn_id)["candidates"][-1]

    upscaled = chat(studio, tweak={"kind": "upscale", "asset_id": picked["asset_id"]}, parent_turn_id=turn_id,
                    conversation_id=conv_id)
    variations = chat(studio, tweak={"kind": "variations", "asset_id": picked["asset_id"]}, parent_turn_id=turn_id,
                      conversation_id=conv_id, count=2)
    styled = chat(studio, tweak={"kind": "style", "asset_id": picked["asset_id"], "style": "anime"},
                  parent_turn_id=turn_id, conversation_id=conv_id)
    widened = chat(studio, tweak={"kind": "aspect", "asset_id": picked["asset_id"], "aspect": "16:9"},
                   parent_turn_id=turn_id, conversation_id=conv_id)
    conv = conversation(studio, conv_id)

    def only_asset(job: dict) -> dict:
        candidates = turn(conv, job["params"]["turn_id"])["candidates"]
        return http_json("GET", api(studio, f"/assets/{candidates[0]['asset_id']}"))[1]

    big = only_asset(upscaled)
    assert (big["width"], big["height"]) == (128, 128) and big["params"]["seed"] == picked["seed"]
    assert big["parent_id"] == picked["asset_id"] and "latent_x2" in big["params"]["stages"]
    var_turn = turn(conv, variations["params"]["turn_id"])
    assert len(var_turn["candidates"]) == 2 and var_turn["seed"] != picked["seed"]
    var = only_asset(variations)
    assert var["params"]["init_asset_id"] == picked["asset_id"] and var["params"]["strength"] == pytest.approx(0.35)
    anime = only_asset(styled)
    assert anime["params"]["style"] == "anime" and anime["params"]["seed"] == picked["seed"]
    wide = only_asset(widened)
    assert wide["width"] > wide["height"] and wide["params"]["seed"] == picked["seed"]
    assert turn(conv, styled["params"]["turn_id"])["text"].startswith("Style → Anime")


@pytest.mark.parametrize("params, status_code, detail", [
    ({"text": ""}, 422, "message is empty"),
    ({"text": "a fox", "conversation_id": "nope"}, 422, "no conversation"),
])
def test_bad_turns_get_a_clear_answer(studio, params, status_code, detail):
    status, body = http_json("POST", api(studio, "/jobs"), {"kind": "chat_turn", "params": params})
    assert status == status_code and detail in body["detail"]


def test_turns_that_make_no_picture_get_a_reply_and_keep_the_conversation(studio):
    first = chat(studio, text="a red fox in fresh snow", count=1)
    conv_id = first["params"]["conversation_id"]
    replies = {}
    for text in ["make it louder", "x" * 5000, "thanks, looks good"]:
        done = chat(studio, text=text, conversation_id=conv_id, count=1)
        replies[text[:20]] = turn(conversation(studio, conv_id), done["params"]["turn_id"])
    assert replies["make it louder"]["refined"]["intent"] == "chat" and not replies["make it louder"]["candidates"]
    assert "couldn't map" in replies["make it louder"]["refined"]["reply"]
    assert "first 1000 characters" in replies["x" * 20]["refined"]["reply"]
    assert replies["thanks, looks good"]["refined"]["intent"] == "chat"
    after = chat(studio, text="make it night", conversation_id=conv_id, count=1)
    last = turn(conversation(studio, conv_id), after["params"]["turn_id"])["refined"]
    assert "fox" in last["prompt"] and "night" in last["prompt"] and last["intent"] == "edit"


@pytest.fixture(scope="module")
def client(studio, tmp_path_factory):
    client = gradio_client.Client(studio.url, verbose=False, analytics_enabled=False,
                                  download_files=str(tmp_path_factory.mktemp("chat-downloads")))
    yield client
    client.close()


def send(client, text: str, count: int = 2, aspect: str = "1:1"):
    # The tab's outputs less its session state: chat, conversation list (its value: the conversation id),
    # title, turn list, candidates gallery, selected info, mapping, message box, status.
    return client.predict(text, count, aspect, api_name="/chat_send")


def value(output):
    """A component's value, whether the endpoint returned it plainly or as an update."""
    return output["value"] if isinstance(output, dict) and output.get("__type__") == "update" else output


def test_a_four_turn_conversation_through_gradio_client(client, studio):
    seeds, conv_id = [], None
    for text in ["a cat sitting on a windowsill", "make it dusk", "no people", "watercolour style"]:
        out = send(client, text)
        history, conv_id, gallery, mapping, status = out[0], value(out[1]), out[4], out[6], out[8]
        assert status == ""
        assert [m["role"] for m in history[-3:]] == ["user", "assistant", "assistant"]
        assert len(gallery) == 2 and all("CLIP" in item["caption"] for item in gallery)
        scores = [float(item["caption"].split("CLIP ")[1].split(" ")[0]) for item in gallery]
        assert scores == sorted(scores, reverse=True)
        assert "**Prompt** (written by the rules)" in mapping
        seeds.append(conversation(studio, conv_id)["turns"][-1]["seed"])
    assert len(set(seeds)) == 1
    assert "| watercolour style | watercolor painting | style |" in mapping and "dusk" in mapping and "people" in mapping

    undone = client.predict(api_name="/chat_undo")
    assert len(conversation(studio, conv_id)["path"]) == 3 and value(undone[1]) == conv_id
    first_turn = conversation(studio, conv_id)["path"][0]
    client.predict(first_turn, api_name="/chat_branch")
    out = send(client, "make it night")
    path = conversation(studio, conv_id)["path"]
    assert len(path) == 2 and path[0] == first_turn
    assert "night" in out[6] and conversation(studio, conv_id)["turns"][-1]["seed"] == seeds[0]

    empty = send(client, "   ")
    assert "message is empty" in empty[8] and "message is empty" in empty[0][-1]["content"][0]["text"]
    assert len(conversation(studio, conv_id)["path"]) == 2  # nothing stored, nothing broken
