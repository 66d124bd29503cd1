"""Settings (env prefix, bounds), request validation, and refusing to start without bwrap."""

import pytest
from pydantic import ValidationError

from aspo.settings import SettingsError, load_settings
from sandbox.pool import SandboxPool, SandboxSettings, SandboxUnavailable
from sandbox.protocol import RunRequest


def test_env_prefix_and_defaults(monkeypatch):
    monkeypatch.setenv("ASPO_SANDBOX_WORKERS", "3")
    monkeypatch.setenv("ASPO_SANDBOX_CGROUP_MODE", "none")
    s = SandboxSettings()
    assert s.workers == 3 and s.cgroup_mode == "none" and s.python_executable == "/usr/bin/python3"
    assert s.insecure_no_sandbox is False


def test_bad_setting_names_the_field():
    with pytest.raises(SettingsError, match="workers"):
        load_settings(SandboxSettings, workers=0)
    with pytest.raises(SettingsError, match="cgroup_mode"):
        load_settings(SandboxSettings, cgroup_mode="v3")


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", "a/../../b", "", "./x", "a//b"])
def test_request_files_must_stay_in_the_work_dir(name):
    with pytest.raises(ValidationError, match="relative path"):
        RunRequest(language="python", code="", files={name: b""})


def test_request_files_accepts_nested_relative_paths():
    assert RunRequest(language="cpp", code="", files={"in/1.txt": b"x"}).files == {"in/1.txt": b"x"}


def test_missing_bubblewrap_refuses_to_start_naming_the_package():
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        SandboxPool(SandboxSettings(bwrap_path="no-such-bwrap-binary", workers=1))


def test_missing_bubblewrap_is_allowed_only_when_insecure(caplog):
    SandboxPool(SandboxSettings(bwrap_path="no-such-bwrap-binary", workers=1,
                                insecure_no_sandbox=True))
    assert "SANDBOX DISABLED" in caplog.text


def test_request_larger_than_the_work_dir_is_rejected():
    from sandbox.protocol import ExecutionLimits
    with pytest.raises(ValidationError, match="workdir_size_mb"):
        RunRequest(language="python", code="", files={"big": b"x" * (2 << 20)},
                   limits=ExecutionLimits(workdir_size_mb=1))
