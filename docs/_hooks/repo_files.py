"""MkDocs hook: links from a page to a repository file outside docs/ work on the site too.

The pages are written to read correctly in the repository (``docs/benchmarks.md`` links
``../benchmarks/results/cpu.json``). On the site such a target is outside ``docs_dir``, so
this hook copies each linked repository file into the site under ``_repo/<its path>`` and
points the link there. A link to a file that does not exist is left alone, so that
``mkdocs build --strict`` still reports it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, InclusionLevel

_LINK = re.compile(r"(\]\()([^)\s#]+)([)#\s])")
_PREFIX = "_repo"


def _repo_root(config) -> Path:
    return Path(config["config_file_path"]).resolve().parent


def _targets(markdown: str, page_path: str) -> list[tuple[str, str]]:
    """``(link, repository path)`` for each relative link that leaves docs/."""
    out = []
    for match in _LINK.finditer(markdown):
        link = match.group(2)
        if "://" in link or link.startswith(("/", "mailto:")):
            continue
        joined = posixpath.normpath(posixpath.join("docs", posixpath.dirname(page_path), link))
        if not joined.startswith(("docs/", "..")) and joined != "docs":
            out.append((link, joined))
    return out


def on_files(files, config):
    root = _repo_root(config)
    docs = Path(config["docs_dir"]).resolve()
    seen = set()
    for page in list(files.documentation_pages()):
        text = (docs / page.src_uri).read_text(encoding="utf-8")
        for _, repo_path in _targets(text, page.src_uri):
            if repo_path in seen or not (root / repo_path).is_file():
                continue
            seen.add(repo_path)
            file = File.generated(
                config, f"{_PREFIX}/{repo_path}", abs_src_path=str(root / repo_path)
            )
            # A linked Markdown file (the harness's README, a results table) becomes a page
            # reached by that link, not a nav entry.
            file.inclusion = InclusionLevel.NOT_IN_NAV
            files.append(file)
    return files


def on_page_markdown(markdown, page, config, files):
    root = _repo_root(config)
    for link, repo_path in _targets(markdown, page.file.src_uri):
        if not (root / repo_path).is_file():
            continue
        depth = posixpath.dirname(page.file.src_uri)
        new = posixpath.relpath(f"{_PREFIX}/{repo_path}", depth or ".")
        markdown = markdown.replace(f"]({link}", f"]({new}")
    return markdown
