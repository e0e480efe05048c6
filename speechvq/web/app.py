"""The web app: Starlette routes over `speechvq.web.work`, run by `speechvq serve`.

    GET  /                          the page (static/index.html)
    GET  /api/info                  the model (`describe_model`), its voices, the limits
    POST /api/convert               form: audio, and target (a name) or reference file(s)
    POST /api/compress              form: audio
    POST /api/sample                form: speaker, seconds
    GET  /api/jobs/{id}             a job's state, progress and result
    GET  /api/jobs/{id}/files/{name}  a file the job wrote

The POSTs answer at once with a job id (202); the page polls the job. A bad
request (not audio, empty, too long, too large, an unknown voice) is a 4xx
with `{"error": "one line"}`; so is a job that fails. The client never names
a path: uploads go to a temporary file that is removed once read, and a job
serves only the files it wrote, by bare name.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from speechvq.audio.io import load_audio
from speechvq.errors import SpeechVQError
from speechvq.evaluation.baselines import parse_baselines
from speechvq.inference.summary import describe_model
from speechvq.web import work
from speechvq.web.jobs import Jobs

STATIC = Path(__file__).parent / "static"
BASELINES = "codec2-2400,opus-6k"
MAX_SAMPLE_SECONDS = 10.0
log = logging.getLogger("speechvq.web")


class BadRequest(Exception):
    """A request the page can fix: answered with its status and one line."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def create_app(
    model: Any,
    *,
    model_name: str = "",
    max_upload_mb: float = 20.0,
    max_seconds: float = 60.0,
    baselines: str = BASELINES,
) -> Starlette:
    """The app over a loaded `SpeechVQ` `model`; uploads over `max_upload_mb` or longer
    than `max_seconds` are refused."""
    jobs = Jobs()
    limit = int(max_upload_mb * 1e6)
    codecs = list(parse_baselines(baselines))
    sr = model.sample_rate

    async def read_audio(upload: Any, what: str) -> np.ndarray:
        """An uploaded file as `[T]` float32 at the model's rate; BadRequest if it is not."""
        if not isinstance(upload, UploadFile):
            raise BadRequest(f"no {what} file in the request")
        data = await upload.read()
        if not data:
            raise BadRequest(f"the {what} file is empty")
        name = Path(upload.filename or what).name
        with tempfile.NamedTemporaryFile(dir=jobs.root, suffix=".upload") as tmp:
            tmp.write(data)
            tmp.flush()
            try:
                wave, _ = await run_in_threadpool(load_audio, tmp.name, sr)
            except SpeechVQError as exc:
                raise BadRequest(str(exc).replace(tmp.name, name)) from None
        if wave.size > max_seconds * sr:
            raise BadRequest(
                f"{name}: {wave.size / sr:.1f} s; this server takes up to {max_seconds:g} s "
                "(speechvq serve --max-seconds)"
            )
        return wave

    async def form(request: Request):
        length = request.headers.get("content-length")
        if length is None:
            raise BadRequest("the request has no Content-Length", 411)
        if int(length) > limit:
            raise BadRequest(
                f"the upload is {int(length) / 1e6:.1f} MB; this server takes up to "
                f"{max_upload_mb:g} MB (speechvq serve --max-upload-mb)",
                413,
            )
        return await request.form(max_files=8, max_fields=16)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def info(request: Request) -> Response:
        return JSONResponse(
            {
                "model": model_name,
                "rows": describe_model(model),
                "speakers": list(model.speakers),
                "speaker_encoder": model.speaker_encoder is not None,
                "prior": model.prior is not None,
                "baselines": [{"name": b.name, "missing": b.missing()} for b in codecs],
                "limits": {
                    "max_upload_mb": max_upload_mb,
                    "max_seconds": max_seconds,
                    "max_sample_seconds": MAX_SAMPLE_SECONDS,
                },
            }
        )

    async def convert(request: Request) -> Response:
        f = await form(request)
        wave = await read_audio(f.get("audio"), "audio")
        uploads = [u for u in f.getlist("reference") if isinstance(u, UploadFile) and u.size]
        voice: Any = str(f.get("target") or "") or None
        if uploads:
            if model.speaker_encoder is None:
                raise BadRequest("this model has no speaker encoder: pick one of its voices")
            references = [(await read_audio(u, "reference"), sr) for u in uploads]
            # A bad reference fails here; the voice is tuned on them in the job (seconds).
            voice = await run_in_threadpool(
                functools.partial(model.voice, references, adapt_steps=0)
            )
        else:
            references = []
            _check(model.speaker_id, voice or model.speakers[0])
        job = jobs.submit(
            "convert", functools.partial(work.convert, model, wave, voice, references=references)
        )
        return JSONResponse({"job": job.id}, status_code=202)

    async def compress(request: Request) -> Response:
        f = await form(request)
        wave = await read_audio(f.get("audio"), "audio")
        job = jobs.submit("compress", functools.partial(work.compress, model, wave, codecs))
        return JSONResponse({"job": job.id}, status_code=202)

    async def sample(request: Request) -> Response:
        f = await form(request)
        if model.prior is None:
            raise BadRequest("this model has no prior to sample from")
        speaker = str(f.get("speaker") or "") or None
        if speaker is not None:
            _check(model.speaker_id, speaker)
        try:
            seconds = float(f.get("seconds") or 3.0)
        except ValueError:
            raise BadRequest("seconds must be a number") from None
        if not (math.isfinite(seconds) and 0.5 <= seconds <= MAX_SAMPLE_SECONDS):
            raise BadRequest(f"seconds must be 0.5 to {MAX_SAMPLE_SECONDS:g}")
        job = jobs.submit("sample", functools.partial(work.sample, model, speaker, seconds))
        return JSONResponse({"job": job.id}, status_code=202)

    async def job_state(request: Request) -> Response:
        job = jobs.get(request.path_params["job_id"])
        if job is None:
            raise BadRequest("no such job (the server keeps the newest ones only)", 404)
        return JSONResponse(job.to_dict())

    async def job_file(request: Request) -> Response:
        job = jobs.get(request.path_params["job_id"])
        path = job.file(request.path_params["name"]) if job is not None else None
        if path is None:
            raise BadRequest("no such file", 404)
        return FileResponse(path, filename=path.name)

    async def bad_request(request: Request, exc: Exception) -> Response:
        status = exc.status if isinstance(exc, BadRequest) else 400
        return JSONResponse({"error": str(exc)}, status_code=status)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            {"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        try:
            yield
        finally:
            jobs.close()  # the temporary files go with the server

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/api/info", info),
            Route("/api/convert", convert, methods=["POST"]),
            Route("/api/compress", compress, methods=["POST"]),
            Route("/api/sample", sample, methods=["POST"]),
            Route("/api/jobs/{job_id}", job_state),
            Route("/api/jobs/{job_id}/files/{name}", job_file),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        exception_handlers={
            BadRequest: bad_request,
            SpeechVQError: bad_request,
            HTTPException: http_error,
            Exception: internal_error,
        },
        lifespan=lifespan,
    )
    app.state.jobs = jobs
    return app


def _check(fn, *args) -> None:
    try:
        fn(*args)
    except SpeechVQError as exc:
        raise BadRequest(str(exc)) from None


def serve(
    model: str | None,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    max_upload_mb: float = 20.0,
    max_seconds: float = 60.0,
) -> None:
    """Load `model` and serve the page until interrupted."""
    import uvicorn

    from speechvq.inference.loading import load

    loaded = load(model)
    app = create_app(
        loaded,
        model_name=str(model or "default"),
        max_upload_mb=max_upload_mb,
        max_seconds=max_seconds,
    )
    shown = f"[{host}]" if ":" in host else host
    print(f"speechvq: serving http://{shown}:{port}/ (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
