"""Speed as a user meets it: the Create tab's Fast mode in a real browser, and waiting jobs of several users
drawn in one batch by the studio's real worker."""

from __future__ import annotations

import uuid

import pytest

from tests.e2e.browser import UI_TIMEOUT_MS, sync_api
from tests.support import http_json

pytestmark = pytest.mark.e2e


def test_fast_sets_the_distilled_settings_and_draws_with_them(page, studio):
    expect = sync_api.expect
    fast = page.locator("#create-fast")
    expect(fast).to_contain_text("Fast: tiny distilled LoRA, 2 steps")
    steps, guidance, sampler = (page.locator(f"#create-{name} input").first for name in ("steps", "guidance", "sampler"))
    expect(steps).to_have_value("4")
    fast.get_by_role("checkbox").check()
    expect(steps).to_have_value("2")
    expect(guidance).to_have_value("1")
    expect(sampler).to_have_value("lcm")

    word = f"heron{uuid.uuid4().hex[:8]}"
    page.locator("#create-prompt textarea").fill(f"a grey {word} at dawn")
    page.locator("#create-generate").click()
    expect(page.locator("#create-status")).to_contain_text("Done: 1 image(s), 64×64 px", timeout=UI_TIMEOUT_MS)
    _, assets = http_json("GET", f"{studio.url}/api/v1/assets?search={word}")
    params = assets[0]["params"]
    assert (params["fast"], params["steps"], params["guidance"], params["sampler"]) == (True, 2, 1.0, "lcm")
    assert params["loras"][-1]["name"] == "Fast mode (tiny distilled LoRA, 2 steps)"

    # Off again: the profile's own steps and sampler come back.
    fast.get_by_role("checkbox").uncheck()
    expect(steps).to_have_value("4")
    expect(sampler).to_have_value("euler")
    assert page.errors == [], f"uncaught errors in the page: {page.errors}"


def test_waiting_jobs_of_several_users_share_one_batch_on_the_real_worker(studio):
    word = uuid.uuid4().hex[:8]
    # A longer job of another size holds the worker while the others arrive, so they are all waiting for it.
    _, holder = http_json("POST", f"{studio.url}/api/v1/jobs", {"kind": "generate", "params": {
        "prompt": f"a wide field {word}", "width": 256, "height": 256, "steps": 40, "seed": 1}})
    jobs = []
    for index, count in enumerate((1, 2, 1)):
        status, job = http_json("POST", f"{studio.url}/api/v1/jobs", {"kind": "generate", "params": {
            "prompt": f"a small boat {index} {word}", "width": 64, "height": 64, "count": count, "seed": 100 * index}})
        assert status == 202
        jobs.append(job)
    assert studio.wait_job(holder["id"])["state"] == "succeeded"
    finished = [studio.wait_job(job["id"]) for job in jobs]
    assert [job["state"] for job in finished] == ["succeeded"] * 3
    # One delivery drew them; the others' deliveries found them done.
    assert [job["attempts"] for job in finished] == [1, 1, 1]
    for index, (job, count) in enumerate(zip(jobs, (1, 2, 1))):
        finals = sorted((http_json("GET", f"{studio.url}/api/v1/assets/{asset_id}")[1] for asset_id in finished[index]["asset_ids"]),
                        key=lambda a: a["params"]["seed"])
        assert [a["params"]["seed"] for a in finals] == [100 * index + i for i in range(count)]
        assert all(a["prompt"] == f"a small boat {index} {word}" for a in finals)
        assert all(a["params"]["drawn_with"] == {"jobs": 3, "pictures": 4} for a in finals)
