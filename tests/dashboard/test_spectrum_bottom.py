"""The Spectrum page shows the bottom/trace table, and with the full Hessian the verdict and the
attribution bars."""

from __future__ import annotations

from pathlib import Path

from tests.dashboard.conftest import run_page


def test_spectrum_page_bottom_trace_verdict(dash_env: Path) -> None:
    run_id = next(p.name for p in dash_env.iterdir())
    at = run_page("spectrum", run=run_id)
    assert not at.exception, [e.value for e in at.exception]
    assert any("Bottom of the spectrum" in h.value for h in at.subheader)
    assert len(at.dataframe) >= 1
    at.radio[0].set_value("full (all weights)").run()
    assert not at.exception, [e.value for e in at.exception]
    verdicts = [m.value for m in at.markdown if "total Hessian over weights" in m.value]
    assert verdicts and verdicts[0].split("**")[1] in ("minimum", "saddle", "undetermined")
    assert any("Trace of the full fit Hessian" in c.value for c in at.caption)
