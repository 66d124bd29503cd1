import pytest


@pytest.fixture
def log_path(tmp_path):
    return tmp_path / "aspo-run.log"
