"""Docs: the project's theory reference (with its formulas), design and contracts, and the other
documents of docs/, section by section. Captions elsewhere link here with
``?doc=theory&section=4.5``."""

import streamlit as st

from ui import docs, shell, state

shell.ensure_shell(__file__)
st.title("Docs")

names = list(docs.DOCUMENTS)
wanted = st.query_params.get("doc", "theory")
if wanted not in names:
    st.warning(
        f"There is no document `{state.shown(wanted)}`; showing docs/theory.md (pick another "
        "below).",
        icon=":material/search_off:",
    )
doc = st.segmented_control(
    "Document",
    names,
    default=wanted if wanted in names else "theory",
    format_func=lambda d: docs.DOCUMENTS[d][1] if d in docs.DOCUMENTS else str(d),
    key="docs_doc",
)
doc = doc if doc in names else "theory"  # a click on the selected choice clears it: keep it
text = docs.read(doc)
sections = docs.parse(text)
by_number = {s.number: s for s in sections}
asked = st.query_params.get("section") if doc == wanted else None
options = ["", *by_number]
pick = st.selectbox(
    "Section",
    options,
    index=options.index(asked) if asked in by_number else 0,
    format_func=lambda n: by_number[n].label if n else "The whole document",
    key=f"docs_section_{doc}_{asked}",
)
pick = pick if pick in by_number else ""  # a value that is not one of the choices: none
bad_link = wanted not in names or bool(asked and asked not in by_number)
untouched = doc == (wanted if wanted in names else "theory") and not pick
if not (bad_link and untouched):  # a bad link stays in the URL until the visitor picks
    st.query_params["doc"] = doc
    if pick:
        st.query_params["section"] = pick
    else:
        st.query_params.pop("section", None)
if asked and asked not in by_number:
    st.warning(
        f"{docs.DOCUMENTS[doc][0]} has no section §{state.shown(asked)}; showing the whole "
        "document (pick a section above).",
        icon=":material/search_off:",
    )

st.caption(f"docs/{docs.DOCUMENTS[doc][0]} in this project · the same file renders on GitHub.")
lines = text.splitlines()
if pick:
    section = by_number[pick]
    docs.render("\n".join(lines[section.start : section.end]))
    i = sections.index(section)
    c1, c2 = st.columns(2)
    step = None
    if i > 0 and c1.button(f"← {sections[i - 1].label}", key="docs_prev"):
        step = sections[i - 1].number
    if i + 1 < len(sections) and c2.button(f"{sections[i + 1].label} →", key="docs_next"):
        step = sections[i + 1].number
    if step is not None:
        st.query_params["section"] = step
        st.rerun()
else:
    docs.render(text)
