"""Fixtures shared across test folders."""

from __future__ import annotations

import pytest


class RecordingControl:
    """A dashboard `RunControl` that only records what was asked of it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause(self) -> None:
        self.calls.append("pause")

    def resume(self) -> None:
        self.calls.append("resume")

    def stop(self) -> None:
        self.calls.append("stop")


@pytest.fixture()
def recording_control() -> RecordingControl:
    return RecordingControl()
