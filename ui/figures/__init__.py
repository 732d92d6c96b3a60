"""Plotly figure builders of the dashboard: plain data in, ``go.Figure`` out.

Pages and ``ui/`` place these figures; nothing here reads files or imports Streamlit, and the
engine (``dufm_core``) imports none of it. One module per topic:

- ``common``    chart options (:data:`CONFIG`), colours, the prediction style, the shared layout
- ``training``  curves against step: metrics, accuracy, a real network's two losses, series
- ``compare``   several runs' series overlaid, seed groups as bands, closed-form references
- ``collapse``  the weights' singular values
- ``spectra``   Hessian spectra: histograms, top eigenvalues, densities, head vs UFM
- ``alignment`` heatmaps and bar charts of the alignment and gradient views
- ``sweeps``    the studies of a sweep: phase, depth, width, sensitivity
- ``theory``    closed-form pictures of the Theory explorer
- ``landscape`` loss landscapes: a line with the quadratic model, a plane with the path
- ``tracking``  eigenspace overlaps over training and between two checkpoints

Every builder is also importable from here (``from ui import figures``;
``figures.metric_curves(...)``, ``config=figures.CONFIG``).
"""

from ui.figures.alignment import bars, heatmap, shared_scale
from ui.figures.collapse import (
    singular_values_at_step,
    singular_values_over_training,
    weights_esd,
)
from ui.figures.common import COLORS, CONFIG, PRED_STYLE
from ui.figures.compare import CompareLine, compare_curves
from ui.figures.landscape import landscape_line, landscape_plane
from ui.figures.spectra import (
    binned_histogram,
    density,
    head_spectra_vs_ufm,
    outlier_attribution,
    spectrum_histogram,
    top_eigenvalues,
)
from ui.figures.sweeps import (
    sweep_depth_outliers,
    sweep_depth_split,
    sweep_phase_gamma,
    sweep_phase_outliers,
    sweep_scatter,
    sweep_sensitivity_figures,
    sweep_width_figures,
)
from ui.figures.theory import gamma_vs_lambda, predicted_spectrum
from ui.figures.tracking import (
    attribution_over_training,
    cos2_heatmap,
    overlap_over_training,
    principal_cos2_bars,
)
from ui.figures.training import (
    accuracy_curves,
    batch_loss_curves,
    has_accuracy,
    layer_curves,
    metric_curves,
    series_lines,
    sharpness_curves,
)

__all__ = [
    "COLORS",
    "CONFIG",
    "PRED_STYLE",
    "CompareLine",
    "accuracy_curves",
    "attribution_over_training",
    "bars",
    "batch_loss_curves",
    "binned_histogram",
    "compare_curves",
    "cos2_heatmap",
    "density",
    "gamma_vs_lambda",
    "has_accuracy",
    "head_spectra_vs_ufm",
    "heatmap",
    "landscape_line",
    "landscape_plane",
    "layer_curves",
    "metric_curves",
    "outlier_attribution",
    "overlap_over_training",
    "predicted_spectrum",
    "principal_cos2_bars",
    "series_lines",
    "shared_scale",
    "sharpness_curves",
    "singular_values_at_step",
    "singular_values_over_training",
    "spectrum_histogram",
    "sweep_depth_outliers",
    "sweep_depth_split",
    "sweep_phase_gamma",
    "sweep_phase_outliers",
    "sweep_scatter",
    "sweep_sensitivity_figures",
    "sweep_width_figures",
    "top_eigenvalues",
    "weights_esd",
]
