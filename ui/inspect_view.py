"""Inspect's "your own model" part (docs/inspect.md): the uploads of a user's model (or features
file) and data, the report made by :mod:`dufm_core.inspection`, and the sections that only such
a report has (collapse per feature layer on train and test data, accuracy, weight spectra).

Uploads are staged to a temporary folder in chunks (:func:`ui.analysis_view.stage_upload`,
hashed on the way) under fixed names (``model.onnx``, ``data.npz``, …): a visitor's file name
never becomes a path. A report is computed once per content and options in a session; every
refusal is one ``st.error`` line naming the uploaded file, never a traceback.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import streamlit as st
from streamlit.runtime.uploaded_file_manager import UploadedFile

from dufm_core.checkpoints import CheckpointError
from dufm_core.config import ConfigError
from dufm_core.report_types import Report
from ui import analysis_view as av
from ui import charts, figures, shell

MODEL_TYPES = ["pt", "safetensors", "onnx"]
NPZ = ["npz"]


def _stage(up: UploadedFile, folder: Path, stem: str) -> tuple[Path, str]:
    """The upload copied to ``folder/<stem><its suffix>`` in chunks, and its SHA-256."""
    staged, digest = av.stage_upload(up, folder, up.name)
    suffix = Path(up.name).suffix.lower()
    target = folder / (stem + (suffix if suffix in (".pt", ".safetensors", ".onnx", ".npz")
                               else ".pt"))
    staged.rename(target)
    return target, digest


def _renamed(text: str, names: dict[Path, str]) -> str:
    """``text`` with every staged path (and the staging folder) replaced by the upload's name."""
    for path, name in names.items():
        text = text.replace(str(path), name).replace(str(path.parent), "(upload)")
    return text


def user_report(model_up: UploadedFile | None, features_up: UploadedFile | None,
                data_up: UploadedFile | None, dataset: str | None, options: dict[str, Any]
                ) -> Report | None:
    """The report of the user's files with ``options`` (arch, head, loss, lam_w, lam_h), or None
    after one ``st.error`` line (module docstring)."""
    from dufm_core.inspection.command import run_inspect
    from dufm_core.inspection.loading import InspectError

    with tempfile.TemporaryDirectory(prefix="dufm-inspect-") as tmp:
        folder = Path(tmp)
        names: dict[Path, str] = {}
        staged: dict[str, Path | None] = {"model": None, "features": None, "data": None}
        digests = []
        for key, up in (("model", model_up), ("features", features_up), ("data", data_up)):
            if up is not None:
                path, digest = _stage(up, folder, key)
                staged[key], names[path] = path, up.name
                digests.append(digest)
        cache = "inspect_user_" + "_".join(digests) + repr(sorted(options.items())) + str(dataset)
        if cache in st.session_state:
            return st.session_state[cache]
        bar = st.progress(0.0, text="Inspecting…")
        try:
            report = run_inspect(
                str(staged["model"]) if staged["model"] else None, options.get("arch"),
                int(options.get("head", 1)), str(staged["data"]) if staged["data"] else None,
                dataset, "", str(staged["features"]) if staged["features"] else None,
                options.get("loss", "ce"), options.get("lam_w"), options.get("lam_h"), False,
                lambda msg, f: bar.progress(min(max(f, 0.0), 1.0), text=msg))
        except (InspectError, ConfigError, CheckpointError, ValueError) as exc:
            st.error(shell.flat(_renamed(str(exc), names), av.MAX_REFUSAL))
            return None
        except Exception as exc:  # a hostile file must not show a traceback
            shell.log_exception(exc, "Inspect's analysis of the user's model")
            st.error("your model could not be analysed: "
                     + shell.one_line(exc, _renamed(str(exc), names)))
            return None
        finally:
            bar.empty()
    shown = model_up if model_up is not None else features_up
    if shown is not None:  # the report names the upload, not its staged copy
        report.run = shown.name
        block = report.extra.get("inspection") or {}
        block["model_file"] = shown.name
        if data_up is not None:
            block["data"] = f"data file {data_up.name}"
    st.session_state[cache] = report
    return report


def own_model_form() -> Report | None:
    """Inspect's form for a user's own classifier: the model (or features) file, its
    architecture, the data, the head and the loss; the report once asked for (or None)."""
    st.caption("Your classifier: a state dict (`.pt` read with `weights_only=True`, or "
               "`.safetensors`) with its architecture, an `.onnx` graph, or a features file; and "
               "an `.npz` of inputs `x`, labels `y` (optionally `x_test`, `y_test`), used as "
               "given. See the guide *Inspect your own model* (docs/inspect.md).")
    kind = st.radio("Model", ["model file", "features file"], horizontal=True)
    model_up = features_up = data_up = None
    dataset = None
    opts: dict[str, Any] = {}
    c1, c2 = st.columns(2)
    if kind == "model file":
        model_up = c1.file_uploader("Model", type=MODEL_TYPES, key="own_model")
        opts["arch"] = c2.text_input("Architecture (state dicts)", "mlp:64-32-10",
                                     help="mlp:D0-D1-…-K, resnet20, resnet20:relu, resnet18")
        where = c1.radio("Data", ["data file (.npz)", "a named data set"], horizontal=True)
        if where == "a named data set":
            dataset = c2.selectbox("Data set (local files)", ["digits", "mnist",
                                                              "fashion-mnist", "cifar10"])
        else:
            data_up = c2.file_uploader("Data", type=NPZ, key="own_data")
    else:
        features_up = c1.file_uploader("Features file", type=NPZ, key="own_features")
    opts["head"] = c1.number_input("Head layers H", 1, 64, 1)
    opts["loss"] = c2.selectbox("Loss", ["ce", "mse"])
    ready = (features_up is not None) or (model_up is not None
                                          and (data_up is not None or dataset))
    if ready and st.button("Inspect", type="primary", key="own_go"):
        st.session_state["own_ready"] = True
    if ready and st.session_state.get("own_ready"):
        return user_report(model_up, features_up, data_up, dataset, opts)
    return None


def show_collapse(report: Report) -> None:
    """Accuracy, then NC1–NC4 and CDNV per feature layer on train (and test) data."""
    acc = report.get("accuracy") or {}
    test = acc.get("test")
    st.markdown(f"**Accuracy**: train {acc.get('train', float('nan')):.4f}"
                + (f", test {test:.4f}" if test is not None else " (no test data)"))
    coll = report.get("collapse") or {}
    rows = []
    for split in ("train", "test"):
        for rec in coll.get(split) or []:
            rows.append({"data": split, **rec})
    st.dataframe(rows, hide_index=True)
    st.caption(
        "NC1 = tr(Σ_W Σ_B^†)/K, NC2 = distance of the class means' Gram from the "
        f"{coll.get('frame', 'etf')} frame, NC3 = energy of the next linear layer outside the "
        "span of the means, NC4 = agreement of the network's prediction with the nearest "
        "training class centre (1 at collapse), CDNV = (Var_c + Var_c')/(2‖μ_c − μ_c'‖²) "
        "averaged over class pairs (0 at collapse); each set with its own class means.")


def show_esd(report: Report, layer: int) -> None:
    """Head layer ``layer``'s singular values with the Marchenko–Pastur bulk edge."""
    rec = report.layers[layer - 1]
    esd = rec.get("weights_esd") or {}
    s = esd.get("singular_values") or []
    charts.show(st, figures.weights_esd(s, esd.get("bulk_edge"), layer, rec.shape or ()),
                f"weights_esd_W{layer}", key=f"esd_{layer}")
    spikes = esd.get("spikes")
    st.caption(
        f"W_{layer} ({' × '.join(map(str, rec.shape or []))}): "
        + (f"{spikes} singular values above the Marchenko–Pastur edge "
           f"{esd['bulk_edge']:.4g} (K = {esd.get('K')}); noise scale σ̂ = "
           f"{esd['noise_scale']:.4g} from the bulk below the top K."
           if spikes is not None else "no bulk below the top K: no edge."))
