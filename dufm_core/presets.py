"""Named starting configurations (the dashboard's presets).

Each is a partial config for :meth:`RunConfig.from_dict`, which fills the keys not given from
the model's defaults (``config.MODEL_DEFAULTS``).
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "paper-linear": {  # docs/theory.md §5.1 / case A: the paper's linear UFM
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
    "paper-relu": {  # docs/theory.md §5.2: ReLU UFM, d = 65 (the paper trains 10^6 epochs)
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
    "ce-linear": {  # cross-entropy deep linear UFM (docs/theory.md §4.7), DNC reached by GD
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
    "resnet20-digits": {  # issue #5 / docs/theory.md §5.3: ResNet-20 + 3 linear layers on digits
        # config.MODEL_DEFAULTS["resnet20"] spelled out; n = 50 (N = 500) and 400 full-batch
        # momentum steps reach 100 % training accuracy in about 1.5 min on one CPU thread
        # (0.2 s per step with logging; docs/real_networks.md §3, §6)
        "model": "resnet20",
        "dataset": "digits",
        "K": 10,
        "n": 50,
        "width": 64,
        "depth": 3,
        "activation": "linear",
        "loss": "mse",
        "lam_w": 5e-3,
        "lam_h": 1e-6,
        "optimizer": "momentum",
        "lr": 0.005,
        "dtype": "float32",
        "steps": 400,
    },
}

DESCRIPTIONS = {
    "paper-linear": "The paper's linear UFM (docs/theory.md case A): K=3, n=40, d=60, L=5, λ=1e-2",
    "paper-relu": "ReLU UFM of the paper's §5.2: d=65, L=5, λ=1e-2 (outliers separate, unequal)",
    "ce-linear": "Cross-entropy linear UFM: K=4, n=10, d=16, L=3, λ=1e-3",
    "quick-demo": "A small linear UFM that converges in a few seconds",
    "resnet20-digits": "ResNet-20 + 3 linear on digits (issue #5 setting): width 64, MSE, "
    "λ_W=5e-3, λ_H=1e-6, n=50, 400 steps (about 1.5 min on a CPU)",
}
