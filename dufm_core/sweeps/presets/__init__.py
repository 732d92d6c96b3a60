"""The example sweep specs offered as presets (the Sweeps page's "Start from"; docs/sweeps.md §6)
and the template of a custom spec.

``sweeps.presets.spec_files()`` maps each example's name (its file stem) to its path.
"""

from __future__ import annotations

from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parents[3] / "examples" / "sweeps"

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
    if not EXAMPLES_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(EXAMPLES_DIR.glob("*.toml"))}
