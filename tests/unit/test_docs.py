"""The docs stand alone: nothing in the repository points at a file outside it (issue 12).

Every file is scanned for names of places a user never has (a design note kept next to the
checkout, absolute home or work paths), and every relative Markdown link and every backticked
repository path in the README and docs/ must name a file or heading that exists.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The pages a reader follows links between.
MARKDOWN = sorted([ROOT / "README.md", ROOT / "benchmarks" / "README.md", *ROOT.glob("docs/*.md")])
# Directories that are not part of the project even when present in a checkout.
SKIPPED_DIRS = {".git", ".venv", "node_modules", "__pycache__", "data"}

# Names of files outside the repository. Written so that this file does not match itself.
OUTSIDE = re.compile(
    r"(?<![\w.-])(?:DESIGN|STYLE)\.md"  # design notes that live beside the checkout, not in it
    r"|\.\./shared\b"  # a sibling directory of the checkout
    r"|(?<![\w.~-])/(?:work|root|home)/"  # absolute paths of one machine
)
# [text](target) and ![alt](target); the target ends at whitespace or the closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*([^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def project_files() -> list[Path]:
    """Tracked and untracked-but-not-ignored files (git), else a walk of the checkout."""
    if shutil.which("git") is not None and (ROOT / ".git").exists():
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
        return [ROOT / name for name in listed.decode().split("\0") if name]
    files: list[Path] = []
    for folder, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and not d.startswith(".")]
        files.extend(Path(folder) / name for name in names)
    return files


def text_of(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
        return None  # binary (plots), or listed by git but deleted in the work tree


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|\[|\]\([^)]*\)", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slug(heading) for heading in HEADING.findall(text)}


def outside_references(text: str) -> list[str]:
    return [match.group(0) for match in OUTSIDE.finditer(text)]


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, fragment = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        if not linked.exists() or not linked.is_relative_to(root):
            broken.append(f"{target} (no such file)")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target} (no such heading)")
    return broken


def missing_paths(page: Path) -> list[str]:
    """Backticked paths that start at a top-level entry of the repository, e.g.
    `collector/sinks/kafka.py`, must exist; placeholders (`<event>`, `{x}`, `*`) are skipped."""
    top = {entry.name for entry in ROOT.iterdir()}
    missing = []
    for span in CODE_SPAN.findall(page.read_text(encoding="utf-8")):
        if " " in span or "/" not in span or re.search(r"[<>{}*$]", span):
            continue
        if span.split("/", 1)[0] in top and not (ROOT / span).exists():
            missing.append(span)
    return missing


def test_no_file_names_a_place_outside_the_repository() -> None:
    found = {}
    for path in project_files():
        text = text_of(path)
        if text is not None and (hits := outside_references(text)):
            found[str(path.relative_to(ROOT))] = sorted(set(hits))
    assert found == {}


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda page: str(page.relative_to(ROOT)))
def test_relative_links_point_at_files_and_headings_that_exist(page: Path) -> None:
    assert broken_links(page) == []


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda page: str(page.relative_to(ROOT)))
def test_repository_paths_named_in_the_docs_exist(page: Path) -> None:
    assert missing_paths(page) == []


def test_the_checks_see_what_they_guard(tmp_path: Path) -> None:
    # The patterns themselves: each kind of outside reference is caught, lookalikes are not.
    outside = "see " + "DESIGN" + ".md, ../" + "shared/x, /" + "home/u/f and /" + "work/main"
    assert len(outside_references(outside)) == 4
    assert outside_references("docs/architecture.md, ~/.cache/x, /var/lib/app, a/home/b") == []
    page = tmp_path / "page.md"
    page.write_text("# A title\n[ok](#a-title) [gone](nowhere.md) [bad](#nope) [web](https://x)\n")
    assert broken_links(page, tmp_path) == ["nowhere.md (no such file)", "#nope (no such heading)"]
    (tmp_path / "nowhere.md").write_text("# Elsewhere\n")
    assert broken_links(page, tmp_path) == ["#nope (no such heading)"]
    assert broken_links(page, tmp_path / "sub") != []  # a link out of the root is broken
    page.write_text("`collector/app.py`, `collector/gone.py`, `plan/<event>/v1.json`, `a/b`\n")
    assert missing_paths(page) == ["collector/gone.py"]
    assert slug("Write keys") == "write-keys"
    assert slug("`capture replay` (files)") == "capture-replay-files"
