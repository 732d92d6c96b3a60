"""Sweeps: a grid of runs from one TOML spec, run by an executor, summarised in one table
(docs/sweeps.md).

The modules follow a sweep's life; each imports only those above it::

    spec      the spec: parsing, validation, expansion into members with stable keys
    folder    the sweep folder on disk: manifest, member records, driver.json, states
    member    one member in a worker: train (model-kind dispatch), analyse, its summary row
    summary   the tables: summary.csv, the monitor's progress table, the listing of sweeps
    driver    run_sweep (the driver), launch_sweep (in the background), cancel_sweep
    study     which studies a table supports and the theory curves beside them
    presets   the example specs shipped with the package, the template of a custom spec

A member is identified by its **key**, a hash of its resolved config (the ``name`` excluded), so a
rerun skips members that already ended (``finished`` or ``diverged``: outcomes of the config, not
accidents), resumes ``cancelled``/``interrupted`` ones from their last checkpoint, and starts the
rest afresh. A member's training *and* its analysis run in the worker (:func:`execute_member`),
so an executor parallelises both. The processes themselves (executors, SIGTERM handling, detached
drivers) are :mod:`dufm_core.process`'s.

The names below are the public API (``from dufm_core import sweeps; sweeps.load_spec(...)``).
"""

from dufm_core.sweeps import presets
from dufm_core.sweeps.driver import (
    SweepResult,
    SweepRunError,
    cancel_sweep,
    launch_sweep,
    main_progress,
    pending_members,
    run_sweep,
)
from dufm_core.sweeps.folder import (
    CANCEL_FILE,
    DONE_STATES,
    ENDED_STATES,
    RESUMABLE_STATES,
    SWEEPS_SUBDIR,
    driver_status,
    manifest,
    prepare,
    read_record,
    runs_root_of,
    sweep_dir,
    sweeps_root,
)
from dufm_core.sweeps.member import execute_member, member_row
from dufm_core.sweeps.spec import (
    Member,
    SpecError,
    SweepSpec,
    config_key,
    load_spec,
    parse_spec,
)
from dufm_core.sweeps.study import phase_curves, studies
from dufm_core.sweeps.summary import (
    list_sweeps,
    progress_table,
    read_summary,
    state_counts,
    summary_columns,
    summary_rows,
    write_summary,
)

__all__ = [
    "CANCEL_FILE",
    "DONE_STATES",
    "ENDED_STATES",
    "RESUMABLE_STATES",
    "SWEEPS_SUBDIR",
    "Member",
    "SpecError",
    "SweepResult",
    "SweepRunError",
    "SweepSpec",
    "cancel_sweep",
    "config_key",
    "driver_status",
    "execute_member",
    "launch_sweep",
    "list_sweeps",
    "load_spec",
    "main_progress",
    "manifest",
    "member_row",
    "parse_spec",
    "pending_members",
    "phase_curves",
    "prepare",
    "presets",
    "progress_table",
    "read_record",
    "read_summary",
    "run_sweep",
    "runs_root_of",
    "state_counts",
    "studies",
    "summary_columns",
    "summary_rows",
    "sweep_dir",
    "sweeps_root",
    "write_summary",
]
