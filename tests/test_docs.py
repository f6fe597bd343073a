"""README stays true: every config key is in its reference, every command in its table."""

import re
from pathlib import Path

from click.testing import CliRunner

from vgglocal.cli import cli
from vgglocal.config import fields_reference

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_starts_with_the_two_commands():
    head = "\n".join(README.splitlines()[:15])
    assert "bin/demo" in head and "bin/test" in head


def test_every_config_key_is_in_the_reference():
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", README, flags=re.M))
    keys = {k for k, _, _ in fields_reference()}
    assert keys - documented == set(), "undocumented config keys"
    assert documented - keys == set(), "README documents keys that do not exist"


def test_every_command_is_in_the_command_table():
    out = CliRunner().invoke(cli, ["--help"]).output
    commands = re.findall(r"^  ([a-z-]+)\s", out.split("Commands:")[1], flags=re.M)
    assert len(commands) >= 8
    for c in commands:
        assert f"`vgglocal {c}" in README, c
