"""The `speechvq` command line: a thin layer over the library.

Each command parses its arguments and calls library functions that tests
call directly. `app` (in `speechvq.cli.common`, with the shared options and the
error handling) gathers the commands of `codec`, `training`,
`evaluation`, `streaming` and `web`.
"""

from __future__ import annotations

import signal
import warnings

from speechvq.cli import codec, evaluation, streaming, training, web  # noqa: F401 (commands)
from speechvq.cli.common import app, on_sigterm

__all__ = ["app", "main"]


def main() -> None:
    # One line per warning (e.g. "output clipped"), not Python's two with a source line.
    warnings.formatwarning = lambda message, *args, **kwargs: f"speechvq: warning: {message}\n"
    # The default SIGTERM action kills at once and leaves temporary files behind;
    # raising instead unwinds `atomic_output`. `train` installs its own handler
    # (checkpoint, then stop) for the length of its loop.
    signal.signal(signal.SIGTERM, on_sigterm)
    app()
