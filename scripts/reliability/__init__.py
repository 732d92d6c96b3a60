"""Reliability probes for docs/reliability.md: what a hostile or unlucky user does to DUFM Lab.

    python -m scripts.reliability [--kills 40] [--json artifacts/reliability.json]

Three families, each counted as a row of the table in docs/reliability.md:

- **inputs** (:mod:`.inputs`): bad command lines and files given to the CLI, each run as its
  own ``python -m dufm_core …`` process under an address-space limit and a timeout. An input
  is *refused* when the process exits non-zero with one error line and no traceback, and no
  run folder was made; *accepted* (a failure: every input here is invalid), *crashed* (a
  traceback or a signal) or *hung* (the timeout) otherwise.
- **faults** (:mod:`.faults`): SIGKILLs of a training process at random moments followed by
  resume, and corrupt files (status, metrics, config, checkpoints) under every operation
  that reads them. A fault is *survived* when no operation raised anything but its
  documented one-line error; *data lost* counts runs whose good checkpoints or metrics did not
  come back.
- **probes** (:mod:`.probes`): security checks (run ids that point outside the runs folder, a
  forged worker pid, code-carrying checkpoints, tiny files that declare huge tensors, the
  server's settings). A probe *held* when the attack had no effect.
"""
