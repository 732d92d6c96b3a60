"""The app shell: every page runs inside app.py's ``st.navigation``, even on a fresh server, and
an unexpected exception on a page is one line for the visitor (the traceback goes to the server's
stderr).

Streamlit treats an app that has a ``pages/`` folder as a legacy multipage app until the main
script has called ``st.navigation`` once in the process. Until then, a direct link such as
``/alignment?run=…&step=…`` runs ``pages/alignment.py`` on its own: no sidebar sections, no wide
layout. :func:`ensure_shell` notices that case, remembers the page and its query parameters, and
switches to ``app.py``, which switches back to the page inside the shell.

A visitor never sees a traceback (it would show server paths and code): :func:`run_page` turns an
uncaught exception into ``Type: message`` with absolute paths cut short (``.streamlit/config.toml``
also sets ``client.showErrorDetails = "type"`` for whatever escapes it).
"""

from __future__ import annotations

import contextlib
import re
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import streamlit as st
from streamlit.errors import FragmentHandledException
from streamlit.navigation.page import StreamlitPage
from streamlit.runtime.scriptrunner import get_script_run_ctx
from streamlit.runtime.scriptrunner_utils.exceptions import ScriptControlException

SHELL_KEY = "_dufm_shell"
GOTO_KEY = "_dufm_goto"


def mark_shell() -> tuple[str, dict[str, str]] | None:
    """Called by app.py: the shell is active; return a page (and its query) to switch to."""
    st.session_state[SHELL_KEY] = True
    return st.session_state.pop(GOTO_KEY, None)


def ensure_shell(page_file: str) -> None:
    """First call of every page: if app.py's navigation has not run, go through it."""
    if st.session_state.get(SHELL_KEY):
        return
    ctx = get_script_run_ctx()
    if ctx is None or Path(ctx.main_script_path).name != "app.py":
        return  # the page runs on its own on purpose (AppTest, `streamlit run pages/x.py`)
    st.session_state[GOTO_KEY] = (f"pages/{Path(page_file).name}", st.query_params.to_dict())
    st.switch_page("app.py")


# --------------------------------------------------------------------------- uncaught errors
# An absolute path in a message ("/home/me/lab/runs/x/config.json"): shown as its last part only
_ABS_PATH = re.compile(r"(?<![\w.~:/-])/(?:[^\s'\"`/:,;()\[\]<>]+/)+([^\s'\"`/:,;()\[\]<>]*)")
MAX_MESSAGE = 300


def flat(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` on one line (runs of white space, newlines included, become one space), absolute
    paths cut to their last part (``…/config.json``), at most ``limit`` characters."""
    text = _ABS_PATH.sub(lambda m: "…/" + m.group(1), " ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def one_line(exc: BaseException, message: str | None = None) -> str:
    """``Type: message`` of an exception for a visitor (``message`` instead of ``str(exc)`` if
    given), through :func:`flat`; never a traceback."""
    text = flat(str(exc) if message is None else message)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def log_exception(exc: BaseException, where: str) -> None:
    """The whole traceback of ``exc`` on the server's stderr, for the operator."""
    print(f"DUFM Lab: uncaught exception in {where}:", file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)


def show_error(exc: Exception, where: str) -> None:
    """Tell the visitor in one ``st.error`` line what went wrong in ``where``; the whole
    traceback goes to the server's stderr (:func:`log_exception`)."""
    log_exception(exc, where)
    st.error(f"Something went wrong on this page: {one_line(exc)}", icon=":material/error:")


@contextlib.contextmanager
def errors_as_one_line(where: str) -> Iterator[None]:
    """Run a block so that an unexpected exception becomes :func:`show_error`'s one line.
    Streamlit's own control flow passes through untouched: ``st.rerun``, ``st.stop`` and
    ``st.switch_page`` raise ScriptControlException (a BaseException), and an error a fragment
    has already shown comes up as FragmentHandledException."""
    try:
        yield
    except (ScriptControlException, FragmentHandledException):
        raise
    except Exception as exc:  # the page's last line of defence
        show_error(exc, where)


def run_page(page: StreamlitPage) -> None:
    """app.py: run the chosen page; an unexpected exception is one ``st.error`` line."""
    with errors_as_one_line(f"page {page.title!r}"):
        page.run()
