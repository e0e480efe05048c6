"""`speechvq serve`: the local web page (`speechvq.web`, the `web` extra)."""

from __future__ import annotations

import ipaddress

import typer

from speechvq.cli.common import ModelOpt, app, errors
from speechvq.errors import SpeechVQError


@app.command()
def serve(
    model: str | None = ModelOpt,
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on (default: this computer only)."
    ),
    port: int = typer.Option(8000, "--port", "-p", help="Port to listen on."),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", help="Largest upload."),
    max_seconds: float = typer.Option(60.0, "--max-seconds", help="Longest upload, in seconds."),
):
    """A local web page: record or upload, convert, compress, sample, listen and look."""
    with errors():
        try:
            from speechvq.web.app import serve as run_server
        except ImportError as exc:
            raise SpeechVQError(
                f"the web page needs the web extra ({exc.name} is missing): "
                "pip install 'speechvq[web]'"
            ) from None
        if not _loopback(host):
            typer.echo(
                f"speechvq: warning: {host} is reachable from other machines; the page has no "
                "login",
                err=True,
            )
        run_server(model, host, port, max_upload_mb=max_upload_mb, max_seconds=max_seconds)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
