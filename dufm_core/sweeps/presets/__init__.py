"""The example sweep specs, shipped beside this file as package data (``*.toml``, declared in
pyproject.toml), so an installed package offers them too: the Sweeps page's presets ("Start
from"; docs/sweeps.md §6) and ``python -m dufm_core sweep dufm_core/sweeps/presets/phase.toml`` in
a checkout. Also the template of a custom spec.

``sweeps.presets.spec_files()`` maps each example's name (its file stem) to its path.
"""

from __future__ import annotations

from pathlib import Path

PRESETS_DIR = Path(__file__).resolve().parent

TEMPLATE = """name = "my-sweep"
[base]
K = 3
n = 10
width = 12
depth = 3
steps = 4000
[grid]
lam = [0.002, 0.02]
seed = [0, 1]
"""


def spec_files() -> dict[str, Path]:
    """The example specs by name (file stem), in name order."""
    return {p.stem: p for p in sorted(PRESETS_DIR.glob("*.toml"))}
