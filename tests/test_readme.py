"""The README is a landing page: short, install first, CI's two commands verbatim, live links."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")
CI = (REPO / ".ci" / "run").read_text(encoding="utf-8")


def _section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _bash(section: str) -> str:
    (command,) = re.findall(r"```bash\n(.*?)\n```", _section(section), flags=re.S)
    return command


def test_readme_is_at_most_200_lines():
    assert len(README.splitlines()) <= 200


def test_ci_runs_the_readme_set_up_and_test_commands_verbatim():
    lines = CI.splitlines()
    assert _bash("Set up") in lines
    assert _bash("Test") in lines
    assert lines[-1] == _bash("Test")  # pytest's summary closes the run


def test_the_user_install_comes_before_the_contributor_set_up():
    titles = re.findall(r"^## (.+)$", README, flags=re.M)
    assert titles.index("Install") < titles.index("Quick start") < titles.index("Set up")


def test_every_relative_link_of_the_readme_and_the_docs_points_at_a_file():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    missing = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        text = re.sub(r"`[^`\n]*`", "", text)  # code spans: `kernel[grid](...)` is no link
        for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" not in link and not (page.parent / link).exists():
                missing.append(f"{page.relative_to(REPO)}: {link}")
    assert missing == []


def test_the_docs_speak_only_of_the_project():
    """No page points at files outside the repository (a reader of the project has only it)."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    outside = []
    for page in pages:
        for path in re.findall(r"(?:\.\./)+[\w./-]*", page.read_text(encoding="utf-8")):
            target = (page.parent / path).resolve()
            if REPO.resolve() not in (target, *target.parents):
                outside.append(f"{page.relative_to(REPO)}: {path}")
    assert outside == []


def test_ci_builds_the_documentation_site_strictly():
    assert re.search(r"^NO_MKDOCS_2_WARNING=1 \.venv/bin/mkdocs build --strict", CI, flags=re.M)
