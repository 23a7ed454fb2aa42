"""Every `--help` ends with example command lines (issue 19), and every example is a command
line the parser accepts: the examples cannot drift from the options."""
from __future__ import annotations

import shlex

import pytest

from featherface import cli
from featherface.cli_help import EXAMPLES
from featherface.sdk import pi


def subcommands() -> dict:
    parser = cli.build_parser()
    [commands] = [a for a in parser._actions if a.dest == "command"]
    return commands.choices


def test_every_subcommand_has_examples():
    assert set(subcommands()) | {"featherface-pi"} == set(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_help_ends_with_the_examples_each_on_its_own_line(name):
    parser = pi.build_parser() if name == "featherface-pi" else subcommands()[name]
    help_lines = parser.format_help().rstrip("\n").splitlines()
    examples = [f"  {line}" for line in EXAMPLES[name]]
    assert help_lines[-len(examples) - 1:] == ["examples:", *examples]


@pytest.mark.parametrize("name, line", [(name, line) for name, lines in sorted(EXAMPLES.items()) for line in lines])
def test_every_example_parses(name, line, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative --out folders in the examples do not exist here: all accepted
    words = shlex.split(line)
    if name == "featherface-pi":
        assert words[0] == "featherface-pi"
        pi.build_parser().parse_args(words[1:])
    else:
        assert words[:2] == ["featherface", name]
        args = cli.build_parser().parse_args(words[1:])
        assert args.command == name
