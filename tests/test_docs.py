"""The repository stands alone: every citation of docs/xen-interfaces.md in the code names
a section that exists there, and every relative link in the docs points at a file."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [
    p
    for d in ("rust", "python", "tests", "benches", "docs")
    for p in (ROOT / d).rglob("*")
    if p.suffix in {".rs", ".py", ".pyi", ".md", ".c", ".sh"} and "target" not in p.parts
]


def sections() -> set[str]:
    text = (ROOT / "docs" / "xen-interfaces.md").read_text()
    found = set()
    for m in re.finditer(r"^#{2,3} (\d+(?:\.\d+)?)[. ]", text, re.M):
        found.add(m.group(1))
    return found


def test_every_citation_resolves() -> None:
    known = sections()
    assert {"3.6", "5.4", "10", "11"} <= known
    cited: dict[str, list[str]] = {}
    # "xen-interfaces.md §3.6", and the further sections of one citation: "§5.4, §5.5"
    citation = re.compile(r"xen-interfaces\.md[^§\n]{0,3}((?:§\d+(?:\.\d+)?[,; and]*)+)")
    for path in SOURCES:
        for line_no, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for m in citation.finditer(line):
                for sec in re.findall(r"§(\d+(?:\.\d+)?)", m.group(1)):
                    cited.setdefault(sec, []).append(f"{path.relative_to(ROOT)}:{line_no}")
    assert len(cited) >= 30, "the code cites the interface document throughout"
    missing = {s: where[:3] for s, where in cited.items() if s not in known}
    assert not missing, f"citations of sections that do not exist: {missing}"


def test_no_citation_of_outside_documents() -> None:
    old_style = re.compile(r"\bref " + "§")  # split, so that this file does not match itself
    outside = "shared/" + "reference"
    for path in SOURCES:
        text = path.read_text(errors="replace")
        assert not old_style.search(text), f"{path}: cite xen-interfaces.md §N"
        assert outside not in text, f"{path}: the reference is docs/xen-interfaces.md"


def test_doc_links_resolve() -> None:
    for doc in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name}: broken link {target}"
