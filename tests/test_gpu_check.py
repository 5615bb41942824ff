"""scripts/gpu_check.sh, the one-call GPU check, without a GPU: what it refuses, and how DEADLINE_S
ends a time-limited call with its summary still written; every step's command, through fakes
that record them; and its compute-sanitizer driver's memory pool."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types

import numpy as np
import pytest
from conftest import SCRIPTS, load_script

from gpucnn.bench import ops
from gpucnn.bench import peers as P
from gpucnn.bench.command import SUITES
from gpucnn.cli import build_parser
from gpucnn.data.datasets import write_idx_dataset

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


@pytest.mark.parametrize("variable", ["DEADLINE_S", "TESTS_MAX_S"])
@pytest.mark.parametrize("deadline", ["10m", "1.5", "abc", "0"])
def test_a_deadline_that_is_not_whole_seconds_is_refused(tmp_path, deadline, variable):
    """Taken as it was, "10m" or "1.5" broke every step's arithmetic: no step ran or was logged,
    and the summary, with no FAIL line, exited 0."""
    result = run(tmp_path, ONLY="bench", **{variable: deadline})
    assert result.returncode == 2
    assert f"{variable}='{deadline}'; expected a positive whole number of seconds" in result.stderr
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
    assert "SKIP bench-memory" in summary  # the last step, after the others


@pytest.mark.parametrize("deadline", [None, "30"])
def test_tests_max_s_caps_the_tests_alone_and_the_benchmarks_still_run(tmp_path, deadline):
    """A hung test run (here a pytest that sleeps) is interrupted at TESTS_MAX_S, with or
    without a later DEADLINE_S, and the steps after it run: the cap is the tests' own."""
    calls = tmp_path / "calls.jsonl"
    hung = recorder(
        tmp_path / "python", calls,
        "if sys.argv[1:3] == ['-m', 'pytest']:\n"
        "    import signal\n"
        "    signal.signal(signal.SIGINT, lambda *a: sys.exit(2))\n"
        "    time.sleep(40)",
    )  # fmt: skip
    env = {"DEADLINE_S": deadline} if deadline else {}
    started = time.time()
    result = run(tmp_path, PYTHON=hung, ONLY="tests bench", TESTS_MAX_S="2", **env)
    assert time.time() - started < 30
    steps = (tmp_path / "out" / "steps.txt").read_text()
    assert "FAIL tests (TIMEOUT: stopped at its cap of 2 s" in steps, steps
    assert "PASS bench-step" in steps and "PASS cuda-backend" in steps
    assert result.returncode == 1
    recorded = [json.loads(line) for line in calls.read_text().splitlines()]
    pytest_env = next(c["env"] for c in recorded if c["args"][:2] == ["-m", "pytest"])
    assert pytest_env["GPUCNN_GPU_SHARED"] is None  # no training shares the GPU


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


SANITIZER_TOOLS = ("memcheck", "racecheck", "initcheck", "synccheck")
# How gpu_check.sh asks gpucnn whether DATA_DIR holds the IDX files (python -c CODE NAME DIR).
FIND_IDX = "import sys; from gpucnn.data.datasets import find_idx_files as f; f(*sys.argv[1:])"
BENCH_SUITES = ("step", "ops", "epoch", "bandwidth", "compile")
TRAININGS = ("train-fashion-net", "train-tutorial-mnist", "train-tutorial-mnist-graph")
# What nvcc -Xptxas -v prints of a kernel without spills (scripts/compile_kernels.sh reads it).
PTXAS_OK = (
    "ptxas info    : Compiling entry function 'k' for 'sm_90'\n"
    "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads"
)


def recorder(path, log, body: str = ""):
    """An executable at ``path`` standing in for a tool: each call appends its name, arguments,
    folder and the variables gpu_check.sh exports to ``log`` (a JSON line), writes the file a
    ``--json PATH`` names (as a benchmark does), then runs ``body`` (Python, ``sys`` imported)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"#!{sys.executable} -S\n"
        "import json, os, sys, time\n"
        "names = ('GPUCNN_REQUIRE_GPU', 'GPUCNN_DEBUG', 'PYTHONPATH', 'PYTHONUNBUFFERED',\n"
        "         'GPUCNN_GPU_SHARED')\n"
        "call = {'program': os.path.basename(sys.argv[0]), 'args': sys.argv[1:],\n"
        "        'cwd': os.getcwd(), 'env': {n: os.environ.get(n) for n in names}}\n"
        f"with open({str(log)!r}, 'a') as f:\n"
        "    f.write(json.dumps(call) + '\\n')\n"
        "if '--json' in sys.argv:\n"
        "    open(sys.argv[sys.argv.index('--json') + 1], 'w').write('{}')\n"
        f"{body}\n"
    )
    path.chmod(0o755)
    return str(path)


def step_names(out) -> list[str]:
    return [line.split()[1] for line in (out / "steps.txt").read_text().splitlines()]


def test_the_one_call_runs_every_step_with_the_command_meant(tmp_path, monkeypatch):
    """What a lent GPU machine runs, ONLY unset and DATA_DIR given, with every tool a recording
    fake: each step in its order (the trainings beside the tests), all passed (exit 0), and each
    command what was meant and accepted by its own parser: the GPU tests (-m gpu), every bench
    suite on cuda writing its JSON under OUT (the real images for the epoch only), the
    three trainings, the host profile, the four compute-sanitizer tools failing on an error
    (--error-exitcode) over the driver on cuda, and nvcc as NVCC names it (not on PATH). The
    fakes only echoed before, so a dropped step, option or sanitizer tool went unnoticed."""
    log, bin_ = tmp_path / "calls.jsonl", tmp_path / "bin"
    # The trainings take a second, so that only a wait for them gets their lines into the summary.
    python = recorder(bin_ / "python", log, "if 'train' in sys.argv: time.sleep(1)")
    sanitizer = recorder(bin_ / "compute-sanitizer", log)
    recorder(bin_ / "nvidia-smi", log)
    nvcc = recorder(tmp_path / "nvcc", log, f"print({PTXAS_OK!r})")
    data = tmp_path / "data"
    data.mkdir()
    result = run(
        tmp_path, PYTHON=python, SANITIZER=sanitizer, NVCC=nvcc, DATA_DIR=str(data), ONLY="",
        ARCHS="90", PATH=f"{bin_}:{os.environ['PATH']}", PYTHONPATH=str(tmp_path / "lib"),
    )  # fmt: skip
    out, root = tmp_path / "out", SCRIPTS.parent
    assert result.returncode == 0, (out / "steps.txt").read_text()
    steps = (out / "steps.txt").read_text().splitlines()
    assert all(line.startswith("PASS ") for line in steps), steps
    assert (out / "summary.txt").read_text().splitlines()[1:] == steps
    names = step_names(out)
    assert names[:2] == ["device", "cuda-backend"]
    assert sorted(names[2:6]) == sorted(["tests", *TRAININGS])
    assert names[6:] == [
        *(f"bench-{suite}" for suite in BENCH_SUITES), "profile-host",
        *(f"sanitizer-{tool}" for tool in SANITIZER_TOOLS), "nvcc-report",
        "bench-step-fashion-net", "bench-ops-winograd", "bench-memory",
    ]  # fmt: skip

    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert {call["cwd"] for call in calls} == {str(root)}
    by_program = {}
    for call in calls:
        by_program.setdefault(call["program"], []).append(call["args"])
    assert by_program["nvidia-smi"] == [[]]
    assert by_program["compute-sanitizer"] == [
        ["--tool", tool, "--error-exitcode", "1", python, "scripts/launch_all_kernels.py",
         "--device", "cuda"]
        for tool in SANITIZER_TOOLS
    ]  # fmt: skip
    assert by_program["nvcc"] and all("-Xptxas" in args for args in by_program["nvcc"])
    for call in calls:
        if call["program"] == "python":
            env = call["env"]
            assert env["GPUCNN_REQUIRE_GPU"] == "1" and env["GPUCNN_DEBUG"] == "1", call
            assert env["PYTHONPATH"] == f"{root}:{tmp_path / 'lib'}", env  # the checkout first
            assert env["PYTHONUNBUFFERED"] == "1"
    python_calls = by_program["python"]
    assert [args for args in python_calls if args[0] == "-c"] == [
        ["-c", FIND_IDX, "fashion-mnist", str(data)],  # DATA_DIR's files looked for first
        ["-c", "from gpucnn.backend import get_backend; print(get_backend('cuda'))"],
    ]
    assert ["-m", "pytest", "-m", "gpu", "-ra", "-p", "no:cacheprovider", "tests"] in python_calls
    pytest_env = next(c["env"] for c in calls if c["args"][:2] == ["-m", "pytest"])
    assert pytest_env["GPUCNN_GPU_SHARED"] == "1"  # trainings beside: the memory test skips

    parser, trainings, benches = build_parser(), set(), []
    for args in python_calls:
        if args[:2] != ["-m", "gpucnn"]:
            continue
        options = parser.parse_args(args[2:])
        assert options.device == "cuda", args
        if args[2] == "train":
            assert options.data_dir == str(data) and not options.progress
            assert (
                options.out == str(out / f"train-{options.model}") + "-graph" * options.cuda_graph
            )
            trainings.add((options.dataset, options.model, options.cuda_graph))
        else:
            assert args[2] == "bench"
            P.select(options.device, options.suite, options.peers)  # known peers of the suite
            assert os.path.isfile(options.json) and os.path.dirname(options.json) == str(out)
            benches.append(options)
    assert trainings == {
        ("fashion-mnist", "fashion-net", False), ("fashion-mnist", "tutorial-mnist", False),
        ("fashion-mnist", "tutorial-mnist", True),
    }  # fmt: skip
    suites = [b.suite for b in benches]
    assert suites == [*BENCH_SUITES, "step", "ops", "memory"]
    assert {*BENCH_SUITES, "memory"} == set(SUITES)
    for b in benches[:-3]:
        assert b.json == str(out / f"bench_{b.suite}.json") and b.conv_algorithm == "auto"
        assert b.data_dir == (str(data) if b.suite == "epoch" else None), b
        assert b.model == "tutorial-mnist", b
    fashion, winograd, memory = benches[-3:]
    assert fashion.model == "fashion-net" and fashion.conv_algorithm == "auto"
    assert fashion.json == str(out / "bench_step_fashion_net.json") and not fashion.peers
    assert winograd.json == str(out / "bench_ops_winograd.json")
    assert winograd.conv_algorithm == "winograd" and winograd.data_dir is None
    conv_cases = [case.name for case in ops.cases([64]) if case.kind == "conv"]
    assert winograd.cases and all(winograd.cases in name for name in conv_cases)
    assert memory.json == str(out / "bench_memory.json") and not memory.peers
    assert (memory.model, memory.batch_size, memory.repeats) == ("fashion-net", [128], 1)

    profile = [args for args in python_calls if args[0] == "scripts/profile_step.py"]
    assert len(profile) == 1
    script = load_script("profile_step")

    def parsed(device):  # stands in for the run once the arguments are read
        raise SystemExit(f"device {device}")

    monkeypatch.setattr(script, "get_backend", parsed)
    with pytest.raises(SystemExit, match="^device cuda$"):
        script.main(profile[0][1:])


def run_groups(tmp_path, only, **env):
    """gpu_check.sh with ONLY=only and echoing fakes for every tool: the steps it ran, in order."""
    log, bin_ = tmp_path / "calls.jsonl", tmp_path / "bin"
    recorder(bin_ / "nvidia-smi", log)
    result = run(
        tmp_path, ONLY=only, PYTHON=recorder(bin_ / "python", log),
        SANITIZER=recorder(bin_ / "compute-sanitizer", log),
        NVCC=recorder(bin_ / "nvcc", log, f"print({PTXAS_OK!r})"), ARCHS="90",
        PATH=f"{bin_}:{os.environ['PATH']}", **env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + (tmp_path / "out" / "steps.txt").read_text()
    return step_names(tmp_path / "out")


BENCH_STEPS = [
    *(f"bench-{suite}" for suite in BENCH_SUITES), "profile-host",
    "bench-step-fashion-net", "bench-ops-winograd", "bench-memory",
]  # fmt: skip
SANITIZER_STEPS = [*(f"sanitizer-{tool}" for tool in SANITIZER_TOOLS), "nvcc-report"]


@pytest.mark.parametrize(
    "only, steps",
    [
        ("tests", ["tests"]),
        ("bench", BENCH_STEPS),
        ("sanitizer", SANITIZER_STEPS),
        (" sanitizer\ttests\n", ["tests", *SANITIZER_STEPS]),
        ("  ", ["tests", *BENCH_STEPS[:-3], *SANITIZER_STEPS, *BENCH_STEPS[-3:]]),
    ],
    ids=["tests", "bench", "sanitizer", "tab-and-newline", "blank"],
)
def test_only_runs_the_groups_it_names(tmp_path, only, steps):
    """ONLY runs just the groups named (and the device checks), whatever white space parts them:
    its groups were checked split on tabs and newlines but looked for between spaces, so
    ONLY=$'sanitizer\\ttests' ran no group at all and exited 0. A blank ONLY is every group (the
    trainings only given DATA_DIR, so none here)."""
    assert run_groups(tmp_path, only) == ["device", "cuda-backend", *steps]


def test_train_alone_runs_the_three_trainings(tmp_path):
    (tmp_path / "data").mkdir()
    names = run_groups(tmp_path, "train", DATA_DIR=str(tmp_path / "data"))
    assert names[:2] == ["device", "cuda-backend"] and sorted(names[2:]) == sorted(TRAININGS)


def test_a_failing_step_fails_the_call_but_not_the_steps_after_it(tmp_path):
    """A step that exits nonzero is a FAIL line with its status, the steps after it still run and
    the summary is written; the call exits 1. A second call into the same OUT starts a new
    steps.txt (its summary would otherwise repeat the first call's lines, failures included)."""
    log, bin_ = tmp_path / "calls.jsonl", tmp_path / "bin"
    recorder(bin_ / "nvidia-smi", log)
    path = f"{bin_}:{os.environ['PATH']}"
    failing = recorder(tmp_path / "python", log, "sys.exit(3 if 'pytest' in sys.argv else 0)")
    result = run(tmp_path, PYTHON=failing, ONLY="tests bench", PATH=path)
    assert result.returncode == 1
    steps = (tmp_path / "out" / "steps.txt").read_text()
    assert "FAIL tests (exit 3, done at " in steps and "tests.log)" in steps
    assert "PASS bench-step" in steps and "PASS bench-memory" in steps
    assert steps in (tmp_path / "out" / "summary.txt").read_text()
    passing = recorder(tmp_path / "python", log)
    assert run(tmp_path, PYTHON=passing, ONLY="tests", PATH=path).returncode == 0
    assert step_names(tmp_path / "out") == ["device", "cuda-backend", "tests"]


def test_no_sanitizer_is_a_failure_and_no_nvcc_a_skip(tmp_path):
    missing = str(tmp_path / "nowhere" / "tool")
    result = run(tmp_path, PYTHON=fake_python(tmp_path, "true"), ONLY="sanitizer",
                 SANITIZER=missing, NVCC=missing)  # fmt: skip
    assert result.returncode == 1
    steps = (tmp_path / "out" / "steps.txt").read_text()
    assert "FAIL sanitizer (no compute-sanitizer" in steps and "SKIP nvcc-report" in steps


def test_deadline_counts_from_the_start_and_a_step_ignoring_sigint_is_killed(tmp_path):
    """DEADLINE_S is for the whole call, from its start: after 2 s of DATA_DIR check and 1 s of
    device step, the next step gets the 3 s left (SIGINT then), not DEADLINE_S again (nor the
    time before the first step, which the check's clock missed); and a step that ignores the
    SIGINT (Python stuck in a CUDA call) is killed 10 s later, so the call still ends with its
    summary (a TIMEOUT line). (With a 4 s deadline the 1 s left was too little on a loaded
    machine: the fakes' own start-up took it, and CI found that step skipped.)"""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    fake_python(tmp_path, "sleep 1", "bin/nvidia-smi")
    (tmp_path / "data").mkdir()
    stubborn = recorder(
        tmp_path / "python", tmp_path / "calls.jsonl",
        f"if sys.argv[1:3] == ['-c', {FIND_IDX!r}]: time.sleep(2); sys.exit(0)\n"
        "import signal\n"
        "signal.signal(signal.SIGINT, lambda *a: print(f'SIGINT at {time.time()}', flush=True))\n"
        "time.sleep(40)",
    )  # fmt: skip
    started = time.time()
    result = run(tmp_path, PYTHON=stubborn, ONLY="tests", DEADLINE_S="6",
                 DATA_DIR=str(tmp_path / "data"), PATH=f"{bin_}:{os.environ['PATH']}")  # fmt: skip
    elapsed = time.time() - started
    assert result.returncode == 1 and elapsed < 30
    steps = (tmp_path / "out" / "steps.txt").read_text()
    assert "PASS device" in steps and "SKIP tests (past DEADLINE_S=6 s)" in steps
    assert "FAIL cuda-backend (TIMEOUT: stopped at DEADLINE_S=6 s" in steps
    log = (tmp_path / "out" / "cuda-backend.log").read_text()
    interrupted = float(log.split("SIGINT at ")[1].split()[0]) - started
    # The script's clock counts whole seconds (date +%s), so its deadline falls up to 1 s before
    # 6 s after the real start (5.04 s was seen); counted from the first step it would come at
    # 8 s or later, restarted per step at 9 s or later.
    assert 4.5 < interrupted < 7.5, log


def test_sanitizer_driver_on_cuda_switches_the_memory_pool_off_first(monkeypatch):
    """On --device cuda scripts/launch_all_kernels.py sets CuPy's allocator to None (a cudaMalloc
    per array) before launching anything: in CuPy's pool an access past an array's end lands in
    the pool's next block and memcheck reports nothing. A fake CuPy and backend stand in."""
    script = load_script("launch_all_kernels")
    events = []

    def backend(device):
        events.append(device)
        return types.SimpleNamespace(runner=None)

    cuda = types.SimpleNamespace(set_allocator=lambda allocator: events.append(allocator))
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=cuda))
    monkeypatch.setattr(script, "get_backend", backend)
    monkeypatch.setattr(script, "launch_all", lambda backend, dt: events.append(dt))
    script.main(["--device", "cuda"])  # 1: the fake backend launched nothing
    assert events == ["cuda", None, np.float32, np.float64]


@pytest.mark.parametrize("files", [False, True], ids=["empty-folder", "idx-files"])
def test_a_data_dir_without_the_idx_files_only_costs_the_real_images(tmp_path, files):
    """A DATA_DIR that is a folder but holds no Fashion-MNIST IDX files (a wrong folder, the
    files not carried to the GPU machine) is dropped like one that is not a folder: a FAIL line
    naming it, the epoch on random images and no training. It failed the epoch benchmark and
    all three trainings instead, the epoch's figure lost. gpucnn's own finder decides (the IDX
    files in the folder or in its fashion-mnist subfolder, raw or .gz)."""
    data = tmp_path / "data"
    data.mkdir()
    if files:
        images, labels = np.zeros((2, 28, 28), np.uint8), np.arange(2)
        write_idx_dataset(data / "fashion-mnist", (images, labels), (images, labels))
    log, bin_ = tmp_path / "calls.jsonl", tmp_path / "bin"
    recorder(bin_ / "nvidia-smi", log)
    # The finder runs in this interpreter (site-packages on), every other command is recorded.
    real = f"os.execv({sys.executable!r}, [{sys.executable!r}, *sys.argv[1:]])"
    python = recorder(tmp_path / "python", log, f"if sys.argv[1:3] == ['-c', {FIND_IDX!r}]: {real}")
    result = run(tmp_path, PYTHON=python, ONLY="bench train", DATA_DIR=str(data),
                 PATH=f"{bin_}:{os.environ['PATH']}")  # fmt: skip
    out = tmp_path / "out"
    steps = (out / "steps.txt").read_text()
    calls = [json.loads(line)["args"] for line in log.read_text().splitlines()]
    epoch = " ".join(next(args for args in calls if "epoch" in args))
    if files:
        assert result.returncode == 0 and "data-dir" not in steps, steps
        assert f"--data-dir {data}" in epoch and "PASS train-fashion-net" in steps
    else:
        assert result.returncode == 1
        assert steps.startswith(f"FAIL data-dir (DATA_DIR={data} holds no Fashion-MNIST IDX files")
        assert "fashion-mnist not found" in (out / "data-dir.log").read_text()
        assert "--data-dir" not in epoch and "train-" not in steps and "PASS bench-epoch" in steps
