"""The project's documents on the dashboard: their sections, and links from captions to them.

``docs/theory.md`` and ``docs/design.md`` number their sections (``## 4. Theorems``, ``### 4.5
The full Hessian``). Code and captions cite them as "theory.md §4.5"; :func:`linkify` turns such a
citation into a link to the Docs page (``docs?doc=theory&section=4.5``), which shows that section.
:func:`parse` is plain Python (no Streamlit), so the tests check with it that every citation in the
code names a section that exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

DOCS_DIR = Path(__file__).resolve().parents[1] / "docs"
# the documents the Docs page offers, in its order: {query value: (file, label)}
DOCUMENTS = {
    "theory": ("theory.md", "Theory"),
    "design": ("design.md", "Design and contracts"),
    "real_networks": ("real_networks.md", "Real networks"),
    "sweeps": ("sweeps.md", "Sweeps"),
    "inspect": ("inspect.md", "Inspect your own model"),
    "benchmarks": ("benchmarks.md", "Benchmarks"),
    "reliability": ("reliability.md", "Reliability"),
}
HEADING = re.compile(r"^(#{2,3}) (\d+(?:\.\d+)?)\.? (.*)$")
# "theory.md §4.5", "design.md §5", "theory.md case A" (the reference cases live in §8)
CITATION = re.compile(
    r"(?<![\w/])(?:docs/)?(theory|design)\.md (?:§(\d+(?:\.\d+)?)|case ([A-I])\b)"
)
IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)\s]+)\)\s*$")


@dataclass(frozen=True)
class Section:
    """A numbered section of a document: its number ("4" or "4.5"), title and lines
    ``[start, end)`` of the document, subsections included."""

    number: str
    title: str
    start: int
    end: int

    @property
    def label(self) -> str:
        return f"§{self.number} {self.title}"


def parse(text: str) -> list[Section]:
    """The numbered sections of a markdown document, in order. A section ends where the next
    heading of the same or a higher level starts (so §4 holds §4.1..§4.7). Headings inside code
    fences do not count."""
    lines = text.splitlines()
    heads: list[tuple[int, int, str, str]] = []  # (line, level, number, title)
    fenced = False
    for i, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
            continue
        if not fenced and (m := HEADING.match(line)):
            heads.append((i, len(m.group(1)), m.group(2), m.group(3).strip()))
    sections = []
    for j, (start, level, number, title) in enumerate(heads):
        end = next((h[0] for h in heads[j + 1 :] if h[1] <= level), len(lines))
        sections.append(Section(number, title, start, end))
    return sections


def read(doc: str) -> str:
    """The text of document ``doc`` (a key of :data:`DOCUMENTS`)."""
    return (DOCS_DIR / DOCUMENTS[doc][0]).read_text(encoding="utf-8")


def link(doc: str, section: str | None = None) -> str:
    """Relative URL of the Docs page at ``section`` of ``doc`` (relative, so it works under any
    base path of the server)."""
    return f"docs?doc={doc}" + (f"&section={section}" if section else "")


def linkify(text: str) -> str:
    """``text`` with every "theory.md §4.5" (or "design.md §5", "theory.md case A") made a
    markdown link to that section on the Docs page."""

    def repl(m: re.Match[str]) -> str:
        section = m.group(2) or "8"  # the reference cases A–I are §8
        return f"[{m.group(0)}]({link(m.group(1), section)})"

    return CITATION.sub(repl, text)


def caption(text: str) -> None:
    """``st.caption`` whose document citations link to the Docs page."""
    st.caption(linkify(text))


def render(text: str) -> None:
    """Markdown with its formulas (Streamlit renders ``$…$`` and ``$$…$$`` with KaTeX); image
    lines (``![alt](figures/x.png)``) become ``st.image`` of the file under docs/."""
    chunk: list[str] = []
    for line in text.splitlines():
        m = IMAGE.match(line)
        path = (DOCS_DIR / m.group(2)).resolve() if m else None
        if m and path is not None and path.is_relative_to(DOCS_DIR) and path.is_file():
            st.markdown("\n".join(chunk))
            chunk = []
            st.image(str(path), caption=m.group(1) or None)
        else:
            chunk.append(line)
    st.markdown("\n".join(chunk))
