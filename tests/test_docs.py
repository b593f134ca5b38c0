"""The documentation resolves in a fresh clone: every relative link points at a
file of the repository, and nothing points at the team's shared folder
(users only have the clone)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# [text](target) and [text]: target; code spans and fenced blocks are dropped first.
_INLINE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE = re.compile(r"`[^`\n]*`")


def links(text: str) -> list[str]:
    text = _CODE.sub("", _FENCE.sub("", text))
    return _INLINE.findall(text) + _REFERENCE.findall(text)


def _tracked() -> set[str] | None:
    """Files a fresh clone has (git ls-files), or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                             text=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return set(out.stdout.splitlines()) if out.returncode == 0 else None


def test_link_parser_finds_inline_and_reference_links_outside_code():
    text = "a [x](docs/a.md#b) b ![i](img.png \"t\") `[no](code.md)`\n```\n[no](fence.md)\n```\n[r]: ../r.md\n"
    assert links(text) == ["docs/a.md#b", "img.png", "../r.md"]


def test_docs_exist():
    assert (REPO / "docs" / "design.md").is_file() and (REPO / "docs" / "results.md").is_file()


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves_to_a_file_of_the_repo(doc):
    tracked = _tracked()
    bad = []
    for target in links(doc.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue  # https:, mailto:, in-page anchors
        path = (doc.parent / unquote(target.split("#", 1)[0])).resolve()
        try:
            rel = path.relative_to(REPO).as_posix()
        except ValueError:
            bad.append(f"{target} (outside the repository)")
            continue
        if not path.exists():
            bad.append(f"{target} (no such file)")
        elif tracked is not None and path.is_file() and rel not in tracked:
            bad.append(f"{target} (ignored by git: a fresh clone lacks it)")
    assert not bad, f"{doc.relative_to(REPO)}: links that do not resolve in a fresh clone: {bad}"


@pytest.mark.parametrize("doc", [*DOCS, REPO / "results" / "published.csv"], ids=lambda p: p.name)
def test_nothing_points_at_the_shared_folder(doc):
    text = doc.read_text(encoding="utf-8")
    hits = [m.group(0) for m in re.finditer(r"\S*(\.\./shared|/work/shared|shared/DESIGN\.md|see DESIGN\.md)\S*", text)]
    assert not hits, f"{doc.relative_to(REPO)} points at files users do not have: {hits}"
