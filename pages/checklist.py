"""Reproduction checklist: the paper's headline claims, each measured on a run of its presets
beside the closed form, with a tolerance, pass or fail and a link to the page that shows it."""

import streamlit as st

from ui import checklist, shell

shell.ensure_shell(__file__)
st.title("Reproduction checklist")
checklist.show()
