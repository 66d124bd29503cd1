"""Fixtures: one real SandboxPool (bubblewrap, cgroups) shared by the sandbox tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from sandbox_helpers import SECRET, PoolDriver, assert_clean


@pytest.fixture(scope="package")
def driver() -> Iterator[PoolDriver]:
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap not installed (apt-get install bubblewrap)")
    os.environ["ASPO_TEST_SECRET"] = SECRET
    d = PoolDriver(workers=2, hang_grace_s=2.0)
    try:
        yield d
    finally:
        d.close()
        os.environ.pop("ASPO_TEST_SECRET", None)


@pytest.fixture()
def sbx(driver: PoolDriver) -> Iterator[PoolDriver]:
    """The shared pool, checked clean after the test."""
    yield driver
    assert_clean(driver)
