"""Named starting configurations (the dashboard's presets; also `train --preset NAME`)."""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "paper-linear": {  # theory.md §5.1 / case A: the paper's linear UFM
        "K": 3,
        "n": 40,
        "width": 60,
        "depth": 5,
        "activation": "linear",
        "loss": "mse",
        "lam_w": 1e-2,
        "lam_h": 1e-2,
        "lr": 0.2,
        "steps": 10_000,
    },
    "paper-relu": {  # theory.md §5.2: ReLU UFM, d = 65 (the paper trains 10^6 epochs)
        "K": 3,
        "n": 40,
        "width": 65,
        "depth": 5,
        "activation": "relu",
        "loss": "mse",
        "lam_w": 1e-2,
        "lam_h": 1e-2,
        "lr": 0.2,
        "steps": 30_000,
    },
    "ce-linear": {  # cross-entropy deep linear UFM (theory.md §4.7), DNC reached by GD
        "K": 4,
        "n": 10,
        "width": 16,
        "depth": 3,
        "activation": "linear",
        "loss": "ce",
        "lam_w": 1e-3,
        "lam_h": 1e-3,
        "lr": 0.5,
        "steps": 20_000,
    },
    "quick-demo": {  # seconds on any laptop
        "K": 3,
        "n": 10,
        "width": 12,
        "depth": 3,
        "activation": "linear",
        "loss": "mse",
        "lam_w": 1e-2,
        "lam_h": 1e-2,
        "lr": 0.2,
        "steps": 3_000,
    },
}

DESCRIPTIONS = {
    "paper-linear": "The paper's linear UFM (theory.md case A): K=3, n=40, d=60, L=5, λ=1e-2",
    "paper-relu": "ReLU UFM of the paper's §5.2: d=65, L=5, λ=1e-2 (outliers separate, unequal)",
    "ce-linear": "Cross-entropy linear UFM: K=4, n=10, d=16, L=3, λ=1e-3",
    "quick-demo": "A small linear UFM that converges in a few seconds",
}
