"""The README stays true: its Python example runs as printed, its command-line table lists every
command, and the commands and options it names (in that table, and in its inline code spans that
run ``gpucnn``) are ones the parser takes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from gpucnn.cli import build_parser

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _subparsers(parser):
    """``{command: its parser}`` of ``gpucnn``'s subcommands."""
    (action,) = [a for a in parser._actions if a.dest == "command"]
    return action.choices


def _table_rows() -> dict[str, str]:
    """The command-line table's rows: ``{command: the row's text, its first cell's too}``."""
    section = README.split("## The command line", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `gpucnn (\w+)([^`]*)` \|(.*)$", section, flags=re.M)
    return {command: usage + text for command, usage, text in rows}


def _named_options() -> dict[str, set[str]]:
    """``{command: the options the README names for it}``: in its table row, and in every code
    span of the README that runs it (`gpucnn train --cuda-graph`)."""
    mentions = [*_table_rows().items()]
    mentions += re.findall(r"`(?:python -m )?gpucnn (\w+)([^`]*)`", README)
    named: dict[str, set[str]] = {}
    for command, text in mentions:
        named.setdefault(command, set()).update(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text))
    return named


def test_the_api_example_runs_as_printed(capsys):
    """The README's "API by example" block, run as it stands: a summary, one training step with
    a finite loss whose gradient reaches the first layer, and the two functional calls."""
    examples = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert examples, "no python block in README.md"
    namespace: dict = {}
    exec(compile(examples[0], "README.md", "exec"), namespace)
    model, loss = namespace["model"], namespace["loss"]
    assert np.isfinite(float(loss)) and float(loss) > 0
    assert "Conv2d" in capsys.readouterr().out  # model.summary printed
    first = model[0].weight
    assert first.grad.shape == first.data.shape and np.abs(first.grad).max() > 0


def test_every_command_of_the_table_is_one_the_parser_takes():
    rows = _table_rows()
    commands = set(_subparsers(build_parser()))
    assert rows and set(rows) <= commands, sorted(set(rows) - commands)
    assert commands <= set(rows), f"not in the README's table: {sorted(commands - set(rows))}"


@pytest.mark.parametrize("command", sorted(_named_options()))
def test_every_option_the_readme_names_is_one_the_command_takes(command):
    """A command or option the README spells (``--epochs``, ``--cuda-graph``) that the parser
    does not accept would send a reader to an error."""
    commands = _subparsers(build_parser())
    assert command in commands, f"gpucnn {command} is not a command"
    taken = {option for action in commands[command]._actions for option in action.option_strings}
    missing = _named_options()[command] - taken
    assert not missing, f"gpucnn {command}: {sorted(missing)} not accepted"
