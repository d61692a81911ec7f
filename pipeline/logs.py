"""The project's own log lines (the offline notice, who the owner is, which address counts,
Hub kernels) on stderr, one line each; libraries keep their own logging."""

from __future__ import annotations

import logging
import sys


def log_to_stderr() -> None:
    """Show the `pipeline` and `hub` loggers' lines from INFO up on stderr (the CLIs and the
    app)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("pipeline", "hub"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
