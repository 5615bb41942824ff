"""Fresh Python processes for the suites that measure what a new process pays (``compile``: a cold
kernel cache, ``memory``: the first steps' peak): this very gpucnn first on their path, whether
installed or checked out, and their last line of output read as JSON."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TIMEOUT_S = 600


def run_child(code: str, what: str, env: Mapping[str, str] | None = None) -> Any:
    """Run ``python -c code`` in a new process with ``env`` (default: this one's) and return its
    last line of standard output, parsed as JSON; a failing child is a RuntimeError that names
    ``what``, its exit status or the signal that killed it, and ends with its standard error."""
    env = dict(os.environ if env is None else env)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (root, env.get("PYTHONPATH"))))
    command = [sys.executable, "-c", code]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    if done.returncode != 0:
        if done.returncode < 0:  # a signal: the kernel's out-of-memory killer sends SIGKILL
            name = signal.Signals(-done.returncode).name
            how = f"was killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
        else:
            how = f"failed (exit {done.returncode})"
        tail = done.stderr.strip()[-2000:]
        raise RuntimeError(f"the {what} process {how}" + (f": {tail}" if tail else ""))
    return json.loads(done.stdout.strip().splitlines()[-1])
