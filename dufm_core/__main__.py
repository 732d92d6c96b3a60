"""``python -m dufm_core``: the command-line interface (see :mod:`dufm_core.cli`)."""

from dufm_core.cli import main

raise SystemExit(main())
