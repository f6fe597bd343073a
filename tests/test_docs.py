"""The docs stay true: every config key is in its reference, every command in its table, every
relative link in README.md and docs/ points at a file and heading that exist."""

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from vgglocal.cli import cli
from vgglocal.config import fields_reference

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = {p.name: p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))}
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_readme_starts_with_the_two_commands():
    head = "\n".join(README.splitlines()[:15])
    assert "bin/demo" in head and "bin/test" in head


def test_readme_links_every_reference_page():
    for name in DOCS:
        assert f"(docs/{name})" in README, name


def test_every_config_key_is_in_the_reference():
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", DOCS["configuration.md"], flags=re.M))
    keys = {k for k, _, _ in fields_reference()}
    assert keys - documented == set(), "undocumented config keys"
    assert documented - keys == set(), "docs/configuration.md documents keys that do not exist"


def test_every_command_is_in_the_command_table():
    out = CliRunner().invoke(cli, ["--help"]).output
    commands = re.findall(r"^  ([a-z-]+)\s", out.split("Commands:")[1], flags=re.M)
    assert len(commands) >= 8
    for c in commands:
        assert f"`vgglocal {c}" in DOCS["commands.md"], c


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    found, fence = set(), False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and re.match(r"#{1,6} ", line):
            found.add(slug(line.lstrip("#")))
    return found


def links(text: str) -> list[str]:
    """Targets of Markdown links outside code blocks, web addresses left out."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", prose) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for target in links(page.read_text()):
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        if not path.exists():
            broken.append(target)
        elif anchor and path.suffix == ".md" and anchor not in anchors(path.read_text()):
            broken.append(target)
    assert broken == [], broken


def test_the_link_check_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title) [gone](#missing) [file](nowhere.md)\n```\n[code](x.md)\n```\n")
    assert links(page.read_text()) == ["#title", "#missing", "nowhere.md"]
    assert anchors(page.read_text()) == {"title"}
