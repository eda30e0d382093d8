"""Test set-up: data comes from the verified copies in ../shared/data, caches go to a temp folder."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory):
    # Never download in tests: point the loaders at the shared copies; keep caches out of $HOME.
    os.environ["IRNN_DATA"] = str(SHARED_DATA)
    os.environ.setdefault("IRNN_CACHE", str(tmp_path_factory.mktemp("irnn-cache")))
    yield
