"""scripts/gpu_check.sh, the one-call GPU check, without a GPU: what it refuses, and how DEADLINE_S
ends a time-limited call with its summary still written."""

from __future__ import annotations

import os
import subprocess

from conftest import SCRIPTS

SCRIPT = SCRIPTS / "gpu_check.sh"


def run(tmp_path, timeout=60, **env):
    environment = {**os.environ, "OUT": str(tmp_path / "out"), **env}
    return subprocess.run(
        ["bash", str(SCRIPT)], env=environment, capture_output=True, text=True, timeout=timeout
    )


def test_unknown_groups_and_trainings_without_data_are_refused(tmp_path):
    result = run(tmp_path, ONLY="bench trian")
    assert result.returncode == 2 and "ONLY names 'trian'" in result.stderr
    result = run(tmp_path, ONLY="train", DATA_DIR="")
    assert result.returncode == 2 and "needs DATA_DIR" in result.stderr
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_deadline_stops_the_running_step_and_skips_the_rest(tmp_path):
    slow = tmp_path / "slow-python"
    slow.write_text("#!/bin/sh\nsleep 60\n")
    slow.chmod(0o755)
    result = run(tmp_path, PYTHON=str(slow), ONLY="bench", DEADLINE_S="3")
    assert result.returncode == 1
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "FAIL bench-step (TIMEOUT: stopped at DEADLINE_S=3 s" in summary
    assert "SKIP bench-ops (past DEADLINE_S=3 s)" in summary
    assert "SKIP profile-host" in summary
    assert "SKIP bench-ops-winograd" in summary  # the last step, after the others
