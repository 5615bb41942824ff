"""gpucnn as a user gets it from a wheel: what it reads and writes outside the checkout is
documented, and nothing depends on the source tree being there."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from gpucnn.backend import emulation_build
from gpucnn.bench import report

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "gpucnn"

# os.environ.get("NAME"), os.environ["NAME"], (std::)getenv("NAME"), and constants such as
# THREADS_ENV = "NAME" or ENV_VAR = "NAME"
_ENV_READ = re.compile(
    r"""(?:environ\.get\(\s*|environ\[\s*|getenv\(\s*|\b[A-Z_]*ENV[A-Z_]*\s*=\s*)"""
    r"""["']([A-Z][A-Z0-9_]*)["']"""
)


def environment_variables() -> set[str]:
    """Every environment variable the package's Python code and emulation headers read by name."""
    names = set()
    for path in [*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.h")]:
        names |= set(_ENV_READ.findall(path.read_text()))
    return names


def test_every_environment_variable_is_in_the_readme():
    """A user of the wheel has the README (the package's long description), not the code: each
    variable that changes what gpucnn does or where it writes (the emulator's build cache above
    all, which must not go beside a read-only installed package) is named there."""
    names = environment_variables()
    assert {"GPUCNN_EMU_CACHE", "XDG_CACHE_HOME", "GPUCNN_KERNEL_DIR", "CXX"} <= names, names
    readme = (REPO / "README.md").read_text()
    missing = sorted(n for n in names if n not in readme)
    assert not missing, f"read by gpucnn but not in README.md: {missing}"


def test_an_unwritable_emulator_cache_names_itself_and_the_variable(tmp_path, monkeypatch):
    """The emulator writes only into its cache; where that cannot be made (a read-only home, a
    file in the way), the error names the folder and GPUCNN_EMU_CACHE, not a bare errno."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("GPUCNN_EMU_CACHE", str(blocker / "emu"))
    cxx = shlex.quote(sys.executable)  # only asked for --version: the cache fails before a build
    with pytest.raises(emulation_build.EmulationBuildError) as caught:
        emulation_build.build("int x;", cxx)
    message = str(caught.value)
    assert str(blocker / "emu") in message and "GPUCNN_EMU_CACHE" in message, message


needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@needs_git
def test_ci_stops_at_the_start_without_the_emulation_or_pytorch(tmp_path):
    """GPUCNN_REQUIRE_EMU=1 and GPUCNN_REQUIRE_TORCH=1 (.ci/run sets both): with no C++ compiler
    and a PyTorch that cannot be imported, the run stops before any test, naming both, instead
    of passing with every kernel and PyTorch check skipped."""
    stub = tmp_path / "torch"
    stub.mkdir()
    (stub / "__init__.py").write_text("raise ModuleNotFoundError('torch is broken here')\n")
    env = {
        **os.environ, "GPUCNN_REQUIRE_EMU": "1", "GPUCNN_REQUIRE_TORCH": "1",
        "CXX": str(tmp_path / "no-compiler"), "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}",
    }  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_readme.py"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    assert "GPUCNN_REQUIRE_EMU=1 but cuda-emu is unavailable" in result.stderr
    assert "GPUCNN_REQUIRE_TORCH=1 but PyTorch cannot be imported" in result.stderr
    assert "passed" not in result.stdout
    assert "GPUCNN_REQUIRE_EMU=1 GPUCNN_REQUIRE_TORCH=1" in (REPO / ".ci" / "run").read_text()


def test_bench_reports_no_commit_for_an_install_inside_another_repository(tmp_path, monkeypatch):
    """A venv inside the user's own project (``proj/.venv/lib/.../site-packages/gpucnn``): the
    bench's JSON must not record that project's commit as gpucnn's."""
    project = tmp_path / "proj"
    project.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "theirs"], cwd=project, check=True)
    installed = project / ".venv" / "site-packages" / "gpucnn" / "bench" / "report.py"
    installed.parent.mkdir(parents=True)
    monkeypatch.setattr(report, "__file__", str(installed))
    assert report._commit() is None


@needs_git
def test_bench_reports_the_commit_of_a_checkout():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout (an unpacked sdist)")
    head = subprocess.run(
        ["git", "rev-parse", "--short=7", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    assert head and head in (report._commit() or ""), "a tag name may come first: v1.0-3-gHASH"


@needs_git
def test_the_sdist_holds_every_tracked_file(tmp_path):
    """The sdist is the source a packager builds and tests from: every tracked file but the CI
    script and .gitignore goes in (setuptools alone takes only the packages, not tests/, scripts/
    or benchmarks/: MANIFEST.in adds them)."""
    pytest.importorskip("setuptools")
    listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout (an unpacked sdist)")
    tracked = set(listed.stdout.splitlines()) - {".gitignore", ".ci/run"}
    tree = tmp_path / "tree"  # a copy, so the build's egg-info does not land in the checkout
    for name in tracked:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, tree / name)
    build = (
        "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", build, str(tmp_path)], cwd=tree, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with tarfile.open(tmp_path / done.stdout.strip().splitlines()[-1]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert not tracked - names, sorted(tracked - names)
