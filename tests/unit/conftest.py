import pytest
import torch

from engine.loader import PipelineCache, Placement
from engine.profiles import load_profiles
from storage.db import Database


@pytest.fixture(scope="module")
def tiny(models_dir):
    return load_profiles(models_dir=models_dir)["tiny"]


@pytest.fixture(scope="module")
def cache():
    """One worker's pipeline cache, shared by a module's tests as a worker shares it between jobs."""
    return PipelineCache(Placement.choose("cpu"))


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One torch thread: the tiny models gain nothing from more, and two threads on two cores slow each step
    down by orders of magnitude whenever another process keeps one core busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def db(tmp_path):
    """A fresh migrated SQLite database."""
    database = Database(f"sqlite:///{tmp_path / 'studio.sqlite'}")
    database.migrate()
    yield database
    database.dispose()
