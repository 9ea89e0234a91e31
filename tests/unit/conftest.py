import pytest

from engine.loader import PipelineCache, Placement
from engine.profiles import load_profiles


@pytest.fixture(scope="module")
def tiny(models_dir):
    return load_profiles(models_dir=models_dir)["tiny"]


@pytest.fixture(scope="module")
def cache():
    """One worker's pipeline cache, shared by a module's tests as a worker shares it between jobs."""
    return PipelineCache(Placement.choose("cpu"))
