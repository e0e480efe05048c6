"""Slow work off the request thread: a job per button press, its progress and its files.

One worker thread runs the jobs in turn: the model is one set of weights
that torch already spreads over the CPU's cores, so two jobs at once would
only each take twice as long. Each job writes into a folder of its own
under the server's temporary folder; only the newest `keep` jobs are kept,
and `close` removes them all.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechvq.errors import SpeechVQError

log = logging.getLogger("speechvq.web")

# What a job runs: work(folder, report) -> result (JSON-able); `report(fraction, stage)`.
Work = Callable[[Path, Callable[[float, str], None]], dict[str, Any]]


@dataclass
class Job:
    id: str
    kind: str  # convert | compress | sample
    folder: Path
    state: str = "queued"  # queued | running | done | failed
    progress: float = 0.0  # 0..1
    stage: str = "waiting for the worker"
    error: str | None = None  # one line, for the page
    result: dict[str, Any] | None = None
    created: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "progress": round(self.progress, 3),
            "stage": self.stage,
            "error": self.error,
            "result": self.result,
        }

    def file(self, name: str) -> Path | None:
        """The job's file `name` (a bare name it wrote), or None: never a path from elsewhere."""
        if not name or name != Path(name).name or name.startswith("."):
            return None
        path = self.folder / name
        return path if path.is_file() else None


class Jobs:
    """The job table and its worker."""

    def __init__(self, keep: int = 32):
        self.root = Path(tempfile.mkdtemp(prefix="speechvq-web-"))
        self.keep = keep
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="speechvq-job")

    def submit(self, kind: str, work: Work) -> Job:
        job_id = uuid.uuid4().hex
        job = Job(job_id, kind, self.root / job_id)
        job.folder.mkdir()
        with self._lock:
            self._jobs[job_id] = job
            self._forget_old()
        self._pool.submit(self._run, job, work)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, job: Job, work: Work) -> None:
        def report(fraction: float, stage: str) -> None:
            job.progress, job.stage = max(job.progress, min(fraction, 1.0)), stage

        job.state, job.stage = "running", "starting"
        try:
            job.result = work(job.folder, report)
        except SpeechVQError as exc:
            job.state, job.error = "failed", str(exc)
        except Exception as exc:  # the page gets a line, the console the traceback
            log.exception("job %s (%s) failed", job.id, job.kind)
            job.state, job.error = "failed", f"internal error: {type(exc).__name__}: {exc}"
        else:
            job.state, job.progress, job.stage = "done", 1.0, "done"

    def _forget_old(self) -> None:
        done = [j for j in self._jobs.values() if j.state in ("done", "failed")]
        for job in sorted(done, key=lambda j: j.created)[: max(0, len(self._jobs) - self.keep)]:
            del self._jobs[job.id]
            shutil.rmtree(job.folder, ignore_errors=True)
