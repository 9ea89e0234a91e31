import json

import pytest

from engine.profiles import ProfileError, get_profile, load_profiles, model_obtainable, resolve_auto, select_profile


def test_every_shipped_profile_loads_with_a_base():
    profiles = load_profiles()
    assert {"sdxl", "hunyuan", "sd15", "tiny"} <= set(profiles)
    for profile in profiles.values():
        assert profile.stages[0] == "base"
        assert profile.min_size <= profile.default_size[0] <= profile.max_size
    assert profiles["tiny"].is_noise and not profiles["sdxl"].is_noise


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ProfileError, match="Unknown profile 'sdxxl'. Known profiles: hunyuan, sd15, sdxl, tiny, auto"):
        get_profile(load_profiles(), "sdxxl")


def test_auto_prefers_sdxl_on_gpu_sd15_on_cpu_and_falls_back_to_tiny():
    profiles = load_profiles()
    assert resolve_auto(profiles, cuda=True, obtainable=lambda m: True).name == "sdxl"
    assert resolve_auto(profiles, cuda=False, obtainable=lambda m: True).name == "sd15"
    assert resolve_auto(profiles, cuda=True, obtainable=lambda m: False).name == "tiny"


def test_tiny_paths_expand_under_the_models_dir(tmp_path):
    tiny = load_profiles(models_dir=tmp_path)["tiny"]
    assert tiny.roles["base"].model == str(tmp_path / "tiny" / "base")


def test_a_user_adds_a_profile_in_the_data_file(tmp_path):
    path = tmp_path / "profiles.json"
    path.write_text(json.dumps({"mine": {"family": "sd", "roles": {"base": {"model": "me/model", "pipeline": "StableDiffusionPipeline"}},
                                         "size": {"default": [512, 512], "min": 256, "max": 768}, "steps": 20,
                                         "guidance": 7, "sampler": "euler"}}))
    assert select_profile(load_profiles(path), "mine").roles["base"].model == "me/model"
    path.write_text(json.dumps({"bad": {"family": "sd", "roles": {"base": {"model": "x", "pipeline": "P"}}}}))
    with pytest.raises(ProfileError, match="lacks the field 'size'"):
        load_profiles(path)


def test_obtainable_offline(tmp_path):
    assert model_obtainable(str(tmp_path))
    assert not model_obtainable("nobody/not-cached-model")  # HF_HUB_OFFLINE=1 in tests
    assert not model_obtainable(str(tmp_path / "missing"))
