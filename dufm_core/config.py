"""Run configuration: one dataclass, validation with one clear line per error, JSON/TOML IO.

A run of the deep unconstrained feature model (UFM) of docs/theory.md §1, or of a real network
(``model = "resnet20"``: a ResNet-20 feature map and a head W_1..W_L trained on real data,
docs/theory.md §5.3; see docs/real_networks.md), is fully described by a :class:`RunConfig`.
Validation happens *before* anything is written to disk, and every error names the field and
the range it must lie in, e.g.::

    lr: must be a positive finite number (got -0.1)

Warnings (not errors) flag runs the theory says are special: a width below K (the collapsed
optimum needs d_l >= K), λ above the critical value (the global optimum is then W = 0, H_1 = 0)
or just below it; they say what the theory guarantees (the global optimum) and what it does not
(that gradient descent reaches it).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dufm_core.config_values import (
    MAX_FILE_BYTES,
    ConfigError,
    check_bool,
    check_choice,
    check_float,
    check_float_or_list,
    check_int,
    check_int_or_list,
    parse_table,
    shown,
)

__all__ = ["FIELDS", "ConfigError", "FieldSpec", "RunConfig", "field_specs", "load_config_file"]

ACTIVATIONS = ("linear", "relu")
LOSSES = ("mse", "ce")
OPTIMIZERS = ("gd", "momentum", "adam")
DTYPES = ("float64", "float32")
DEVICES = ("auto", "cpu", "cuda")
INITS = ("random", "optimum")
SCHEDULES = ("log", "linear")
# model → is it a real network (data, a feature map) rather than a UFM (free features)? The model
# kinds (dufm_core/kinds/) take their ``real_network`` from here, so that the dashboard can name
# a run's model without importing the kinds (and torch) on its first page
REAL_NETWORK = {"ufm": False, "resnet20": True}
MODELS = tuple(REAL_NETWORK)
DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10")
LR_SCHEDULES = ("constant", "cosine", "step")
FEATURE_DIM = 64  # output dimension of the ResNet-20 feature map (global-average-pooled stage 3)

# Defaults that differ for a model (applied by RunConfig.from_dict to keys not given, so that
# ``--model resnet20`` alone is a sensible run; the dataclass defaults stay the UFM ones).
# resnet20 follows docs/theory.md §5.3: K = 10 classes, a linear head of L = 3 layers of width 64,
# λ_W = 5e-3, λ_H = 1e-6, SGD with momentum, float32. The lr is 0.005, not the paper's 0.05:
# from this init, full-batch momentum SGD on digits diverged at 0.05 and 0.01
# (docs/real_networks.md).
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "ufm": {},
    "resnet20": {
        "K": 10,
        "width": FEATURE_DIM,
        "depth": 3,
        "lam_w": 5e-3,
        "lam_h": 1e-6,
        "optimizer": "momentum",
        "lr": 0.005,
        "dtype": "float32",
    },
}
# real-network fields and the value they must keep for a UFM (which has no data, no
# mini-batches, no schedule and no backbone)
_REAL_ONLY = {
    "dataset": "digits",
    "data_dir": "",
    "batch_size": 0,
    "lam_backbone": 0.0,
    "lr_schedule": "constant",
    "amp": False,
}

MAX_DEPTH = 64
MAX_WIDTH = 65_536
MAX_K = 10_000
MAX_STEPS = 1_000_000_000
MAX_LAMBDA = 1e100  # λ_W, λ_H: far past λ_crit; beyond it the closed forms overflow a float
# λ within this factor below λ_crit (critical_scale ≤ 1.25) gets the near-threshold warning
NEAR_CRITICAL = 1.25


@dataclass
class RunConfig:
    """Everything that defines one training run of a deep UFM.

    Shapes follow docs/theory.md §1: K classes with n samples each (N = K n), L = ``depth`` weight
    matrices W_l of shape (d_{l+1}, d_l) with d_{L+1} = K, and free features H_1 of shape (d_1, N).
    ``width`` gives d_1..d_L (one value for all, or a list of L values).
    """

    # model
    model: str = "ufm"
    K: int = 3
    n: int = 40
    width: int | list[int] = 60
    depth: int = 5
    activation: str = "linear"
    loss: str = "mse"
    # regularisation: λ_W (one value or one per layer) and λ_H
    lam_w: float | list[float] = 1e-2
    lam_h: float = 1e-2
    # optimisation
    optimizer: str = "gd"
    lr: float = 0.2
    momentum: float = 0.9
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    steps: int = 10_000
    # logging / checkpoint schedule
    schedule: str = "log"
    log_points: int = 200
    checkpoint_points: int = 12
    # log the sharpness (top eigenvalue of the total Hessian) at every log point (UFM, gd and
    # momentum only; dufm_core/sharpness.py)
    log_sharpness: bool = False
    # reproducibility and numerics
    seed: int = 0
    dtype: str = "float64"
    device: str = "auto"
    # initialisation
    init: str = "random"
    init_scale: float = 1.0
    init_noise: float = 0.0
    # bookkeeping
    name: str = ""
    # real networks (model = "resnet20"; docs/real_networks.md). A UFM must leave these at their
    # defaults. ``n`` is the number of training samples per class (class-balanced subsample).
    dataset: str = "digits"  # digits | mnist | fashion-mnist | cifar10
    data_dir: str = ""  # folder with the data files (not needed for the bundled digits)
    batch_size: int = 0  # samples per optimizer step; 0 = the whole training set (full batch)
    test_fraction: float = 0.2  # digits only: held-out fraction per class (others: official test)
    lam_backbone: float = 0.0  # weight decay λ_b/2·‖θ_backbone‖² on every backbone parameter
    lr_schedule: str = "constant"  # constant | cosine | step (×0.1 at 50 % and 75 % of steps)
    amp: bool = False  # bf16 autocast of the forward pass; CUDA only

    # ----------------------------------------------------------------- derived
    @property
    def N(self) -> int:
        """Total number of samples K·n."""
        return self.K * self.n

    @property
    def widths(self) -> list[int]:
        """Hidden widths d_1..d_L (list of length L)."""
        if isinstance(self.width, list):
            return list(self.width)
        return [int(self.width)] * self.depth

    @property
    def dims(self) -> list[int]:
        """All feature dimensions d_1..d_{L+1}, with d_{L+1} = K."""
        return [*self.widths, self.K]

    @property
    def ufm_lam_h(self) -> float:
        """λ_H of the deep UFM this run is compared with (the closed forms' λ_H).

        A UFM run penalises (λ_H/2)‖H_1‖², so this is ``lam_h``. A real network penalises the
        *mean* feature norm (λ_H/2)·mean_i ‖h(x_i)‖² (docs/real_networks.md §3), which on the
        whole training set is the UFM penalty with λ_H,UFM = λ_H/N, N = K·n training samples.
        """
        if self.model == "ufm":
            return float(self.lam_h)
        return float(self.lam_h) / self.N

    @property
    def lam_ws(self) -> list[float]:
        """λ_{W_1}..λ_{W_L} (list of length L)."""
        if isinstance(self.lam_w, list):
            return [float(x) for x in self.lam_w]
        return [float(self.lam_w)] * self.depth

    # ----------------------------------------------------------------- IO
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of the fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Build from a mapping; unknown keys are an error naming the key.

        Keys not given take the defaults of the chosen model (:data:`MODEL_DEFAULTS`), so that
        ``{"model": "resnet20"}`` gets K = 10, a width-64 head, float32, and so on. A saved
        config.json holds every key, so reloading it never changes a value.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, Mapping):
            raise ConfigError("config", f"must be a table/object of config keys (got "
                                        f"{type(data).__name__})")
        data = dict(data)
        if "lam" in data:  # convenience: one λ for every λ_W and λ_H
            lam = data.pop("lam")
            data.setdefault("lam_w", lam)
            data.setdefault("lam_h", lam)
        unknown = sorted((str(k) for k in set(data) - names), key=lambda k: (len(k), k))
        if unknown:
            key = unknown[0]
            raise ConfigError(
                key if key.isidentifier() and len(key) <= 60 else shown(key),
                f"unknown config key; known keys: {', '.join(sorted(names))}"
            )
        model = data.get("model", "ufm")
        if isinstance(model, str):
            for key, value in MODEL_DEFAULTS.get(model, {}).items():
                data.setdefault(key, value)
        return cls(**data)

    def save(self, path: str | Path) -> None:
        """Write as JSON (not atomic: used for user files; the run store writes atomically)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    # ----------------------------------------------------------------- validation
    def validate(self) -> list[str]:
        """Check every field; raise :class:`ConfigError` on the first bad one.

        Normalises list-valued fields in place (a one-element list becomes a scalar) and returns the
        list of theory warnings (empty when the run is ordinary).
        """
        check_choice("model", self.model, MODELS)
        self.K = check_int("K", self.K, 2, MAX_K)
        self.n = check_int("n", self.n, 1, 10_000_000)
        self.depth = check_int("depth", self.depth, 1, MAX_DEPTH)
        self.width = check_int_or_list("width", self.width, self.depth, 1, MAX_WIDTH)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("loss", self.loss, LOSSES)
        self.lam_w = check_float_or_list("lam_w", self.lam_w, self.depth, 0.0, MAX_LAMBDA)
        self.lam_h = check_float("lam_h", self.lam_h, 0.0, MAX_LAMBDA)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        self.lr = check_float("lr", self.lr, 0.0, math.inf, lo_open=True)
        self.momentum = check_float("momentum", self.momentum, 0.0, 1.0, hi_open=True)
        if not isinstance(self.betas, (list, tuple)) or len(self.betas) != 2:
            raise ConfigError("betas", f"must be two numbers in [0, 1) (got {shown(self.betas)})")
        self.betas = [check_float("betas", b, 0.0, 1.0, hi_open=True) for b in self.betas]
        self.steps = check_int("steps", self.steps, 1, MAX_STEPS)
        check_choice("schedule", self.schedule, SCHEDULES)
        self.log_points = check_int("log_points", self.log_points, 2, 100_000)
        self.checkpoint_points = check_int("checkpoint_points", self.checkpoint_points, 1, 10_000)
        self._validate_sharpness()
        self.seed = check_int("seed", self.seed, 0, 2**63 - 1)
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("device", self.device, DEVICES)
        check_choice("init", self.init, INITS)
        self.init_scale = check_float("init_scale", self.init_scale, 0.0, math.inf, lo_open=True)
        self.init_noise = check_float("init_noise", self.init_noise, 0.0, math.inf)
        if not isinstance(self.name, str) or len(self.name) > 80:
            raise ConfigError("name", "must be a string of at most 80 characters")
        self._validate_real()
        if self.init == "optimum" and min(self.widths) < self.K:
            raise ConfigError(
                "init",
                f"'optimum' needs every width >= K = {self.K} (got widths {self.widths}); "
                "use init=random",
            )
        return self.warnings()

    def _validate_sharpness(self) -> None:
        """``log_sharpness`` is a bool, and only for UFM runs with gd or momentum: a real
        network's Hessian over all its parameters would cost far more than a training step, and
        Adam has no stability limit on the raw Hessian to compare with."""
        self.log_sharpness = check_bool("log_sharpness", self.log_sharpness)
        if not self.log_sharpness:
            return
        if self.model != "ufm":
            raise ConfigError("log_sharpness", f"applies to model ufm only (got model "
                                               f"{self.model}); leave it false")
        if self.optimizer == "adam":
            raise ConfigError("log_sharpness", "needs optimizer gd or momentum (Adam's "
                                               "stability is not set by the Hessian's top "
                                               "eigenvalue against 2/lr)")

    def _validate_real(self) -> None:
        """Checks of the real-network fields (and of the UFM fields they constrain)."""
        check_choice("dataset", self.dataset, DATASETS)
        if not isinstance(self.data_dir, str) or len(self.data_dir) > 4096:
            raise ConfigError("data_dir", "must be a folder path of at most 4096 characters")
        self.batch_size = check_int("batch_size", self.batch_size, 0, 100_000_000)
        self.test_fraction = check_float("test_fraction", self.test_fraction, 0.0, 0.9)
        self.lam_backbone = check_float("lam_backbone", self.lam_backbone, 0.0, math.inf)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        self.amp = check_bool("amp", self.amp)
        if self.model == "ufm":
            for key, default in _REAL_ONLY.items():
                if getattr(self, key) != default:
                    raise ConfigError(
                        key,
                        f"must be {default!r} for model ufm (got {shown(getattr(self, key))}): it "
                        "applies to real networks only (--model resnet20)",
                    )
            return
        # real network: the head's input is the backbone's feature vector h(x) ∈ R^64
        if self.widths[0] != FEATURE_DIM:
            raise ConfigError(
                "width",
                f"must start with d_1 = {FEATURE_DIM} for model {self.model} (the backbone's "
                f"feature dimension; W_1 is d_2 × {FEATURE_DIM}): give {FEATURE_DIM} or a list "
                f"such as {FEATURE_DIM},128,128 (got {self.width})",
            )
        if self.K != 10:
            raise ConfigError(
                "K", f"must be 10 for dataset {self.dataset} (its number of classes) (got {self.K})"
            )
        if self.init != "random":
            raise ConfigError(
                "init", f"must be random for model {self.model} (got {self.init!r})"
            )
        if self.amp and self.device == "cpu":
            raise ConfigError(
                "amp", "needs a CUDA GPU (bf16 autocast is GPU-only); use --device cuda or auto "
                "on a GPU machine, or leave amp off on the CPU"
            )
        if self.amp and self.dtype != "float32":
            raise ConfigError("amp", f"needs dtype float32 (got {self.dtype})")

    def warnings(self) -> list[str]:
        """Theory warnings: the run is valid but special (docs/theory.md §3.1, §3.2, §9). They
        say what the theory guarantees (where the global optimum is) and what it does not (that
        gradient descent from a random start reaches it)."""
        from dufm_core import theory

        out: list[str] = []
        if min(self.widths) < self.K:
            out.append(
                f"width {min(self.widths)} < K = {self.K}: the collapsed optimum needs d_l >= K, "
                "so the network cannot reach neural collapse and the closed forms do not apply"
            )
        lam_h = self.ufm_lam_h  # λ_H/N for a real network (it penalises the mean feature norm)
        if self.loss == "mse" and min([*self.lam_ws, self.lam_h]) > 0:
            out.extend(self._threshold_warnings(theory, lam_h))
        if min([*self.lam_ws, self.lam_h]) == 0:
            out.append(
                "a λ is 0: the loss has no regulariser on some factor, so no finite optimum "
                "with the closed-form structure exists"
            )
        return out

    def _threshold_warnings(self, theory: Any, lam_h: float) -> list[str]:
        """Above λ_crit, or within :data:`NEAR_CRITICAL` below it (MSE, every λ > 0)."""
        scale = theory.critical_scale(self.K, self.n, self.lam_ws, lam_h)
        if scale > NEAR_CRITICAL:
            return []
        where = ""
        if self.model != "ufm":
            where += f" (λ_H here is the UFM's λ_H/N = {lam_h:.4g}, N = {self.N})"
        if len(set(self.lam_ws)) == 1 and self.lam_ws[0] == lam_h:
            where += f" (λ_crit = {theory.lambda_crit(self.K, self.n, self.depth):.6g})"
        stall = ("the theory does not say that gradient descent from a random start reaches it: "
                 "near λ_crit it can stall at another critical point")
        if not theory.is_nontrivial(self.K, self.n, self.lam_ws, lam_h):
            lhs = theory.threshold_lhs(self.K, self.n, self.lam_ws, lam_h)
            rhs = theory.threshold_rhs(self.depth)
            return [f"λ is above the critical value (K^(L+1) n λ_H Πλ_W = {lhs:.4g} >= "
                    f"{rhs:.4g}){where}: the global optimum is W = 0, H_1 = 0 with loss 1/2 "
                    f"(docs/theory.md §3.1); {stall} (a lower-rank one, or the non-zero local "
                    "minimum of docs/theory.md §3.2)"]
        return [f"λ is close below the critical value (every λ × {scale:.4g} reaches it){where}: "
                "the global optimum is the collapsed one of docs/theory.md §3.3; "
                f"{stall} (of lower rank, or a stationary point of docs/theory.md §3.2)"]


# --------------------------------------------------------------------- field metadata
@dataclass(frozen=True)
class FieldSpec:
    """What the CLI and the dashboard's Train form know of one :class:`RunConfig` field: the CLI
    writes ``--<field>``'s help from it, ``ui/config_form.py`` builds the form's widget from it.

    - ``lo``/``hi`` (``lo_open``/``hi_open``) and ``choices``: the values that
      :meth:`RunConfig.validate` allows (tests/test_config_fields.py holds the two equal); for a
      per-layer list they bound each entry.
    - ``models``: which models use the field, ``"all"``, ``"ufm"`` or ``"real"`` (real networks).
    - ``group``, ``row``, ``span``: where the form puts it. Group ``"main"``, ``"more"`` (an
      expander) or ``"data"`` (real networks); the fields of one row side by side in the order
      of :data:`FIELDS`, ``span`` of four columns each; group ``""`` keeps a field out of the form.
    - ``widget``: ``"number"``, ``"text"``, ``"select"`` or ``"check"`` where the type does not
      say it (an int is a number, a field with choices a select, a bool a check, the rest text:
      a float is typed as text, so that 1e-06 stays 1e-06); ``step`` of a number.
    - ``only_if`` = (field, values): the field is used only while that field has one of the
      values (the form disables it otherwise).
    """

    label: str
    help: str
    group: str = "main"
    row: int = 0
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[str, ...] = ()
    models: str = "all"
    widget: str = ""
    span: int = 1
    step: float | None = None
    only_if: tuple[str, tuple[str, ...]] | None = None

    def applies_to(self, model: str) -> bool:
        """Whether a run of ``model`` uses this field."""
        return self.models == "all" or (self.models == "ufm") == (model == "ufm")

    def allowed(self) -> str:
        """The allowed values as validation words them: ``[2, 10000]``, ``(0, inf)``, ``a | b``."""
        if self.choices:
            return " | ".join(self.choices)
        if self.lo is None or self.hi is None:
            return ""
        if isinstance(self.lo, int) and isinstance(self.hi, int):
            return f"[{self.lo}, {self.hi}]"
        right = ")" if self.hi_open or math.isinf(self.hi) else "]"
        hi = "inf" if math.isinf(self.hi) else f"{self.hi:g}"
        return f"{'(' if self.lo_open else '['}{self.lo:g}, {hi}{right}"


_EACH_LAYER = "one value, or one per layer as a,b,c"
# One entry per RunConfig field, in the order of the Train form. A new field gets its line here.
FIELDS: dict[str, FieldSpec] = {
    "model": FieldSpec(
        "model", "ufm: free features H_1 and L weight matrices; resnet20: a ResNet-20 feature "
        "map h(x) and a head of L layers, trained on real data (docs/real_networks.md)",
        group="", choices=MODELS),
    # real networks: data and training (the form's first block for them)
    "dataset": FieldSpec(
        "dataset", "digits (8×8, the copy scikit-learn ships) or mnist, fashion-mnist, cifar10 "
        "from local files", group="data", row=1, choices=DATASETS, models="real"),
    "data_dir": FieldSpec(
        "data folder (data_dir)", "the folder with the data set's standard files (MNIST/raw/…, "
        "cifar-10-batches-py/…, or the files themselves); nothing is ever downloaded",
        group="data", row=1, span=2, models="real",
        only_if=("dataset", ("mnist", "fashion-mnist", "cifar10"))),
    "test_fraction": FieldSpec(
        "test fraction (digits)", "digits only: the held-out fraction of every class (the "
        "others use their official test set)", group="data", row=1, lo=0.0, hi=0.9,
        models="real", widget="number", step=0.05, only_if=("dataset", ("digits",))),
    "batch_size": FieldSpec(
        "batch size (0 = full batch)", "samples per optimizer step; 0 = the whole training set",
        group="data", row=2, lo=0, hi=100_000_000, models="real"),
    "lr_schedule": FieldSpec(
        "lr schedule", "constant; cosine ½(1 + cos(π·step/steps)); step ×0.1 from 50 %, ×0.01 "
        "from 75 %", group="data", row=2, choices=LR_SCHEDULES, models="real"),
    "lam_backbone": FieldSpec(
        "backbone weight decay λ_b", "(λ_b/2)·‖θ_backbone‖² on every backbone parameter",
        group="data", row=2, lo=0.0, hi=math.inf, models="real"),
    "amp": FieldSpec(
        "amp (bf16, CUDA only)", "runs the backbone under bf16 autocast on a CUDA GPU (refused "
        "on the CPU); the head and the loss stay in float32, which the run's dtype must be",
        group="data", row=2, models="real"),
    # the model and its loss
    "K": FieldSpec("K classes", "number of classes (10 for the real data sets)", row=1,
                   lo=2, hi=MAX_K),
    "n": FieldSpec(
        "n per class (training samples)", "samples per class, N = K·n in all (a real network: "
        "a class-balanced subsample of the training set)", row=1, lo=1, hi=10_000_000),
    "depth": FieldSpec("depth L", "number of weight matrices W_1..W_L (a real network: of its "
                       "head)", row=1, lo=1, hi=MAX_DEPTH),
    "width": FieldSpec(
        "width (d or d1,…,dL)", f"widths d_1..d_L: {_EACH_LAYER} (a real network's d_1 is the "
        f"feature dimension {FEATURE_DIM})", row=1, lo=1, hi=MAX_WIDTH),
    "activation": FieldSpec("activation", "between the layers", row=2, choices=ACTIVATIONS),
    "loss": FieldSpec("loss", "fit term: squared error to one-hot targets, or cross-entropy",
                      row=2, choices=LOSSES),
    "lam_w": FieldSpec("λ_W (one or per layer)", f"weight decay (λ_W/2)‖W_l‖²: {_EACH_LAYER}",
                       row=2, lo=0.0, hi=MAX_LAMBDA),
    "lam_h": FieldSpec(
        "λ_H", "feature penalty: (λ_H/2)‖H_1‖² (a real network: (λ_H/2)·mean_i ‖h(x_i)‖²)",
        row=2, lo=0.0, hi=MAX_LAMBDA),
    # optimisation
    "optimizer": FieldSpec("optimizer", "gd: gradient descent; momentum: heavy ball; adam",
                           row=3, choices=OPTIMIZERS),
    "lr": FieldSpec("learning rate", "step size of the optimizer", row=3, lo=0.0, hi=math.inf,
                    lo_open=True),
    "steps": FieldSpec("steps", "optimizer steps in all", row=3, lo=1, hi=MAX_STEPS),
    "seed": FieldSpec("seed", "seeds the initialisation (and a real network's batches)", row=3,
                      lo=0, hi=2**63 - 1),
    # more: initialisation, precision, device, logging
    "init": FieldSpec(
        "init", "random, or optimum: the closed-form collapsed point (UFM only; every width "
        "≥ K)", group="more", row=1, choices=INITS),
    "init_scale": FieldSpec("init scale", "scale of the random initialisation", group="more",
                            row=1, lo=0.0, hi=math.inf, lo_open=True),
    "init_noise": FieldSpec(
        "init noise (optimum)", "standard deviation of the N(0, σ²) noise added to every entry "
        "of the optimum", group="more", row=1, lo=0.0, hi=math.inf, models="ufm",
        only_if=("init", ("optimum",))),
    "dtype": FieldSpec("dtype", "floating-point precision", group="more", row=1, choices=DTYPES),
    "device": FieldSpec("device", "auto: a CUDA GPU when there is one, else the CPU",
                        group="more", row=2, choices=DEVICES),
    "log_points": FieldSpec("log points", "steps logged to metrics.jsonl", group="more", row=2,
                            lo=2, hi=100_000),
    "checkpoint_points": FieldSpec("checkpoints", "checkpoints kept for the analyses",
                                   group="more", row=2, lo=1, hi=10_000),
    "name": FieldSpec("name", "a label in the run's folder name (at most 80 characters)",
                      group="more", row=2),
    "momentum": FieldSpec("momentum β", "the momentum optimizer's coefficient β",
                          group="more", row=3, lo=0.0, hi=1.0, hi_open=True),
    "betas": FieldSpec("Adam betas β1,β2", "Adam's two decay rates, as β1,β2", group="more",
                       row=3, lo=0.0, hi=1.0, hi_open=True),
    "schedule": FieldSpec(
        "log/checkpoint spacing", "log: dense early, sparse late; linear: evenly spaced",
        group="more", row=3, choices=SCHEDULES),
    "log_sharpness": FieldSpec(
        "log sharpness (vs 2/lr)", "at every log point, the top eigenvalue of the total-loss "
        "Hessian over all parameters, against the stability limit 2/lr (gd or momentum)",
        group="more", row=4, models="ufm"),
}


def field_specs() -> list[tuple[dataclasses.Field, FieldSpec]]:
    """Every RunConfig field with its :class:`FieldSpec`, in the dataclass's order."""
    fields = dataclasses.fields(RunConfig)
    missing = [f.name for f in fields if f.name not in FIELDS]
    if missing:
        raise KeyError(f"config.FIELDS has no entry for the RunConfig field(s) {missing}")
    return [(f, FIELDS[f.name]) for f in fields]


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or TOML config file into a dict (not yet validated); any bad file (missing,
    over 1 MiB, not UTF-8, not parseable, not a table) is one ConfigError line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("config", f"file not found: {p}")
    if p.stat().st_size > MAX_FILE_BYTES:
        raise ConfigError("config", f"{p} is larger than {MAX_FILE_BYTES // 1024} KiB")
    return parse_table(p.read_bytes(), p.suffix.lower() == ".toml", "config", str(p))
