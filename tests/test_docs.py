"""The venue facts the code relies on live in docs/VENUES.md, and the code cites them by section
("VENUES §3.1", "docs/VENUES.md §12"). A citation of a section that does not exist points nowhere."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CITATION = re.compile(r"VENUES(?:\.md)? §(\d+(?:\.\d+)?)")
SECTION = re.compile(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", re.MULTILINE)


def _citations() -> dict[str, list[str]]:
    cited: dict[str, list[str]] = {}
    for folder in ("python", "rust", "tests", "benches", "docs"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix not in {".py", ".rs", ".md"} or "target" in path.parts:
                continue
            for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                for section in CITATION.findall(line):
                    cited.setdefault(section, []).append(f"{path.relative_to(ROOT)}:{lineno}")
    return cited


def test_venue_facts_are_in_docs():
    text = (ROOT / "docs" / "VENUES.md").read_text(encoding="utf-8")
    sections = set(SECTION.findall(text))
    assert {"1", "1.1", "2.1", "9.3", "12"} <= sections, "docs/VENUES.md lost its numbered sections"
    cited = _citations()
    assert len(cited) > 10, "the code no longer cites docs/VENUES.md"
    dangling = {s: where for s, where in cited.items() if s not in sections}
    assert not dangling, f"citations of sections docs/VENUES.md does not have: {dangling}"
