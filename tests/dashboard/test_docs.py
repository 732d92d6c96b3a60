"""The project's documents: every citation in the code names a section that exists, captions link
to it, and the Docs page shows it."""

from __future__ import annotations

import re

import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers import ROOT
from ui import docs

CITED = re.compile(r"(theory|design)\.md §(\d+(?:\.\d+)?)(?:[–-]§(\d+(?:\.\d+)?))?")
CODE = ["app.py", "dufm_core", "ui", "pages", "tests", "benchmarks", "scripts", "README.md", "docs"]


def _citations() -> list[tuple[str, str, str]]:
    """(file:line, document, section) of every "theory.md §N(.M)" in the project."""
    out = []
    for entry in CODE:
        path = ROOT / entry
        files = [path] if path.is_file() else [*path.rglob("*.py"), *path.rglob("*.md")]
        for f in files:
            for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
                for m in CITED.finditer(line):
                    for section in filter(None, (m.group(2), m.group(3))):
                        out.append((f"{f.relative_to(ROOT)}:{i}", m.group(1), section))
    return out


def test_every_cited_section_exists() -> None:
    cites = _citations()
    assert len(cites) > 100  # the scan really sees the code's citations
    numbers = {d: {s.number for s in docs.parse(docs.read(d))} for d in ("theory", "design")}
    missing = [f"{where}: {d}.md §{s}" for where, d, s in cites if s not in numbers[d]]
    assert not missing, "citations of sections that do not exist:\n" + "\n".join(missing)


def test_theory_has_the_numbered_sections_and_formulas() -> None:
    sections = docs.parse(docs.read("theory"))
    top = [s.number for s in sections if "." not in s.number]
    assert top == [str(i) for i in range(10)]  # §0 .. §9, in order
    by = {s.number: s for s in sections}
    assert {"3.1", "4.5", "4.7", "6.2"} <= set(by)
    text = docs.read("theory").splitlines()
    section4 = "\n".join(text[by["4"].start : by["4"].end])
    assert "### 4.5" in section4 and "## 5." not in section4  # §4 holds its subsections only
    assert "$$" in docs.read("theory")  # display formulas for KaTeX
    assert "0.1648378727" in docs.read("theory")  # case A's loss, a golden number


def test_parse_ignores_headings_in_code_fences() -> None:
    text = "## 1. One\nx\n```\n## 2. Not a heading\n```\n### 1.1 Sub\ny\n## 2. Two\n"
    sections = docs.parse(text)
    assert [(s.number, s.title, s.start, s.end) for s in sections] == [
        ("1", "One", 0, 7),
        ("1.1", "Sub", 5, 7),
        ("2", "Two", 7, 8),
    ]


@pytest.mark.parametrize(
    ("text", "linked"),
    [
        ("see theory.md §4.5.", "see [theory.md §4.5](docs?doc=theory&section=4.5)."),
        ("docs/design.md §5", "[docs/design.md §5](docs?doc=design&section=5)"),
        ("theory.md case A here", "[theory.md case A](docs?doc=theory&section=8) here"),
        ("mytheory.md §4", "mytheory.md §4"),
        ("no citation", "no citation"),
    ],
)
def test_linkify(text: str, linked: str) -> None:
    assert docs.linkify(text) == linked


def _docs_page(**query: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "docs.py"), default_timeout=60)
    for k, v in query.items():
        at.query_params[k] = v
    return at.run()


def test_docs_page_shows_the_asked_section() -> None:
    at = _docs_page(doc="theory", section="4.5")
    assert not at.exception
    assert at.selectbox[0].value == "4.5"
    shown = "\n".join(m.value for m in at.markdown)
    assert "### 4.5" in shown and "## 5." not in shown
    at.button(key="docs_next").click().run()  # the next section: §4.6
    assert at.selectbox[0].value == "4.6"
    assert "### 4.6" in "\n".join(m.value for m in at.markdown)


def test_docs_page_whole_document_and_unknown_section() -> None:
    at = _docs_page(doc="design", section="99")
    assert not at.exception
    assert "no section §99" in at.warning[0].value
    assert at.selectbox[0].value == ""  # the whole document
    assert "## 3." in "\n".join(m.value for m in at.markdown)


def test_captions_link_to_the_docs_page() -> None:
    at = AppTest.from_file(str(ROOT / "pages" / "theory_explorer.py"), default_timeout=60).run()
    assert not at.exception
    captions = "\n".join(c.value for c in at.caption)
    assert "](docs?doc=theory&section=3)" in captions
