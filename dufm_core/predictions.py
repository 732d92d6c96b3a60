"""Which closed forms apply to a run, and with which λ (docs/theory.md §4, docs/design.md §5).

:class:`TheoryFor` holds the UFM config whose predictions apply — a UFM run's own config; for a
real network the UFM with the same K, L, widths and λ_W and λ_H,UFM = λ_H/N (its model kind
makes it: :meth:`dufm_core.kinds.base.ModelKind.ufm_config`) — and says whether the global
closed forms of :func:`dufm_core.theory.predict` hold there: MSE with every λ positive. CE has
no global closed form (the report gives DNC-point values instead), nor has a non-positive λ.

Ask :func:`dufm_core.kinds.predict_for` with any run's config; :func:`for_ufm` is for a config
that already is the UFM one (the report builders, which run on the UFM view).
"""

from __future__ import annotations

from dataclasses import dataclass

from dufm_core import theory
from dufm_core.config import RunConfig

__all__ = ["TheoryFor", "for_ufm"]


@dataclass(frozen=True)
class TheoryFor:
    """The theory that applies to a run: ``cfg`` is the UFM config of its closed forms."""

    cfg: RunConfig

    @property
    def positive(self) -> bool:
        """Every λ (λ_W of each layer and λ_H) is positive."""
        return min([*self.cfg.lam_ws, self.cfg.lam_h]) > 0

    @property
    def closed_form(self) -> bool:
        """The global closed forms apply: MSE with positive λ."""
        return self.cfg.loss == "mse" and self.positive

    @property
    def lam_h(self) -> float:
        """The λ_H of the closed forms (λ_H/N for a real network)."""
        return self.cfg.lam_h

    def prediction(self) -> theory.Prediction | None:
        """:func:`dufm_core.theory.predict` at the UFM config, or None where no closed form
        applies."""
        if not self.closed_form:
            return None
        c = self.cfg
        return theory.predict(c.K, c.n, c.lam_ws, c.lam_h)

    def gamma(self) -> float | None:
        """The closed-form γ (output = γY), or None where no closed form applies."""
        if not self.closed_form:
            return None
        c = self.cfg
        return theory.gamma(c.K, c.n, c.lam_ws, c.lam_h)


def for_ufm(cfg: RunConfig) -> TheoryFor:
    """The theory of a config that is already the UFM's (no λ mapping)."""
    return TheoryFor(cfg)
