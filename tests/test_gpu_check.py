"""scripts/gpu_check.sh, the one-call GPU check, without a GPU: what it refuses, and how DEADLINE_S
ends a time-limited call with its summary still written."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import SCRIPTS

SCRIPT = SCRIPTS / "gpu_check.sh"


def run(tmp_path, timeout=60, cwd=None, **env):
    environment = {**os.environ, "OUT": str(tmp_path / "out"), **env}
    return subprocess.run(
        ["bash", str(SCRIPT)], env=environment, capture_output=True, text=True, timeout=timeout,
        cwd=cwd,
    )  # fmt: skip


def test_unknown_groups_and_trainings_without_data_are_refused(tmp_path):
    result = run(tmp_path, ONLY="bench trian")
    assert result.returncode == 2 and "ONLY names 'trian'" in result.stderr
    result = run(tmp_path, ONLY="train", DATA_DIR="")
    assert result.returncode == 2 and "needs DATA_DIR" in result.stderr
    assert not (tmp_path / "out").exists()  # refused before anything ran


@pytest.mark.parametrize("deadline", ["10m", "1.5", "abc", "0"])
def test_a_deadline_that_is_not_whole_seconds_is_refused(tmp_path, deadline):
    """Taken as it was, "10m" or "1.5" broke every step's arithmetic: no step ran or was logged,
    and the summary, with no FAIL line, exited 0."""
    result = run(tmp_path, ONLY="bench", DEADLINE_S=deadline)
    assert result.returncode == 2
    assert f"DEADLINE_S='{deadline}'; expected a positive whole number of seconds" in result.stderr
    assert not (tmp_path / "out").exists()


def fake_python(tmp_path, body: str, name: str = "fake-python"):
    """An executable standing in for python3 (or another command): a shell script with ``body``."""
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_deadline_interrupts_the_running_step_and_skips_the_rest(tmp_path):
    # SIGINT, not SIGTERM: pytest then still prints its failures and summary into the log.
    slow = fake_python(tmp_path, "trap 'echo interrupted; exit 130' INT\nsleep 60 & wait")
    result = run(tmp_path, PYTHON=slow, ONLY="bench", DEADLINE_S="3")
    assert result.returncode == 1
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "FAIL cuda-backend (TIMEOUT: stopped at DEADLINE_S=3 s" in summary
    assert "interrupted" in (tmp_path / "out" / "cuda-backend.log").read_text()
    assert "SKIP bench-step (past DEADLINE_S=3 s)" in summary
    assert "SKIP profile-host" in summary
    assert "SKIP bench-ops-winograd" in summary  # the last step, after the others


def test_tests_run_before_the_benchmarks_and_a_missing_data_dir_only_costs_the_real_images(
    tmp_path,
):
    echo = fake_python(tmp_path, 'echo "$@"')
    result = run(tmp_path, PYTHON=echo, ONLY="tests bench", DATA_DIR=str(tmp_path / "nowhere"))
    assert result.returncode == 1  # the data-dir line fails the call
    steps = (tmp_path / "out" / "steps.txt").read_text().splitlines()
    assert steps[0].startswith(f"FAIL data-dir (DATA_DIR={tmp_path / 'nowhere'} is not a folder")
    names = [line.split()[1] for line in steps]
    assert names.index("cuda-backend") < names.index("tests") < names.index("bench-step")
    assert "--data-dir" not in (tmp_path / "out" / "bench-epoch.log").read_text()


def test_relative_paths_are_from_the_callers_folder(tmp_path):
    """The script runs in the checkout; OUT, DATA_DIR and the commands named by a path were taken
    from there, not from where it was called. A command named alone is still found on PATH."""
    fake_python(tmp_path, 'echo "$@"')
    fake_python(tmp_path, 'echo sanitizer "$@"', "fake-sanitizer")
    (tmp_path / "data").mkdir()
    (tmp_path / "bin").mkdir()
    fake_python(tmp_path, 'echo nvcc "$@"', "bin/nvcc")
    run(
        tmp_path, cwd=tmp_path, OUT="out", DATA_DIR="data", PYTHON="./fake-python",
        SANITIZER="./fake-sanitizer", NVCC="nvcc", PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}",
        ONLY="bench sanitizer", ARCHS="90",
    )  # fmt: skip
    out = tmp_path / "out"
    steps = (out / "steps.txt").read_text()
    assert "PASS cuda-backend" in steps and "data-dir" not in steps, steps
    assert f"--data-dir {tmp_path / 'data'}" in (out / "bench-epoch.log").read_text()
    assert "PASS sanitizer-memcheck" in steps
    assert "sanitizer --tool memcheck" in (out / "sanitizer-memcheck.log").read_text()
    assert "nvcc -std=c++17" in (out / "nvcc-report.log").read_text()


# What the lent GPU machines may lack: they have numpy, cupy, torch and pytest, and no registry.
OPTIONAL_ON_GPU_MACHINES = ("PIL", "tqdm", "matplotlib", "threadpoolctl")


def test_the_gpu_tests_are_collected_without_the_optional_packages(tmp_path):
    """gpu_check.sh's tests step runs ``pytest -m gpu tests``: one test file that imports Pillow
    (or tqdm, matplotlib, threadpoolctl) at its top stopped the whole run at collection
    ("Interrupted: 1 error during collection") on a machine without it, and no GPU test ran."""
    missing = tmp_path / "missing"
    for name in OPTIONAL_ON_GPU_MACHINES:
        (missing / name).mkdir(parents=True)
        (missing / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{name}'\", name={name!r})\n"
        )
    root = SCRIPTS.parent
    path = os.pathsep.join(filter(None, (str(missing), str(root), os.environ.get("PYTHONPATH"))))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "--collect-only", "-q",
         "-p", "no:cacheprovider", str(root / "tests")],
        env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True, timeout=300,
        cwd=root,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "error" not in result.stdout.splitlines()[-1], result.stdout[-3000:]
