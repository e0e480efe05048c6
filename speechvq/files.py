"""Writing files safely: a temporary file renamed into place, the cleanup after a kill,
and values made fit for JSON.

Every output of speechvq (audio, codes, `.svq`, model files, checkpoints,
reports) goes through `atomic_output`, so a failure, Ctrl-C or SIGTERM
never leaves a half-written file under the real name.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


class atomic_output:
    """Context manager giving a temporary path that is renamed onto `path` on success.

    A failure (or Ctrl-C) leaves `path` untouched and removes the temporary file,
    so no command ever leaves a half-written output behind.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp" + self.path.suffix, dir=self.path.parent
        )
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.tmp is not None
        if exc_type is None:
            # mkstemp (and some writers, e.g. safetensors, which recreate the
            # file) leave it readable by its owner only; give the output the
            # permissions a plain open() would: 0666 less the umask.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.tmp, 0o666 & ~umask)
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that `atomic_output(path)` calls left when killed.

    Only SIGKILL (or a power cut) leaves one: any exception, Ctrl-C and (in the
    CLI) SIGTERM remove it. Call this only where no other process is writing
    `path`, e.g. when a training run resumes in its own folder.
    """
    import glob

    path = Path(path)
    pattern = f".{glob.escape(path.name)}.*.tmp{glob.escape(path.suffix)}"
    removed = sorted(path.parent.glob(pattern))
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def jsonable(x: Any) -> Any:
    """`x` with NaN and Inf as None (JSON null: strict readers reject NaN) and NumPy scalars
    as Python ones (arrays as lists), ready for `json.dumps`."""
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, (np.integer, np.bool_)):
        return x.item()
    return x
