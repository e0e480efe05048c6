"""What every command shares: the `app`, the common options and the error handling.

A user-caused problem (`SpeechVQError`) prints one line on
stderr and exits with status 2; `--debug` shows the traceback instead.
Outputs are written atomically and an existing output is kept unless
`--force`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import typer

from speechvq.config import COMPRESS_SEARCH_STEPS, REFERENCE_ADAPT_STEPS
from speechvq.errors import SpeechVQError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="speechvq: VQ-VAE speech codec and voice conversion (van den Oord et al. 2017).",
)

_state = {"debug": False}

ModelOpt = typer.Option(
    None, "--model", "-m", help="Model file, or the name of a shipped model (default: shipped)."
)
ForceOpt = typer.Option(False, "--force", "-f", help="Overwrite an existing output file.")
SeedOpt = typer.Option(None, "--seed", help="Random seed; the same seed gives the same output.")
TempOpt = typer.Option(1.0, "--temperature", "-t", help="Sampling temperature (0 = argmax).")


def adapt_option(default: int, what: str) -> typer.Option:
    """`--adapt STEPS`: how long to tune a voice's vector (`models.voice.adapt_voice`);
    `what` says which voice, on which recordings."""
    return typer.Option(
        default,
        "--adapt",
        min=0,
        metavar="STEPS",
        help=f"Tune the vector of {what} this many steps, so the decoder re-synthesises "
        "them best (speaker adaptation: about 0.2-0.4 s of one CPU thread a step; "
        "docs/speaker.md). 0: the speaker encoder's vector as it is.",
    )


SearchOpt = typer.Option(
    None,
    "--search",
    min=0,
    metavar="STEPS",
    help="Search the codes by synthesis this many steps per 4 s window: the codes the "
    "decoder turns back into the input most closely, not the encoder's nearest (better STOI "
    "and PESQ, the same file format; about 3 s of one CPU thread per second of audio at 30; "
    f"docs/code-search.md). Default {COMPRESS_SEARCH_STEPS} for a parallel decoder, 0 for the "
    "WaveNet; 0: the encoder's codes (fast).",
)
SearchRateOpt = typer.Option(
    0.0,
    "--search-rate",
    min=0.0,
    metavar="MU",
    help="Weigh each searched code's cost under the prior (nats) by MU against its distance, "
    "so the entropy-coded rate grows less (0: off; docs/code-search.md).",
)


def search_config(model, steps: int | None, rate: float):
    """The `SearchConfig` of `--search`/`--search-rate` for `model`: the model's default
    (`default_search`) without `--search`; None (no search) for 0 steps."""
    from speechvq.inference.code_search import SearchConfig, default_search

    if steps is None:
        found = default_search(model, rate)
        if found is None and rate:
            raise SpeechVQError("--search-rate: this model's decoder is not searched by default")
        return found
    if steps == 0:
        if rate:
            raise SpeechVQError("--search-rate needs a search (--search 0 turns it off)")
        return None
    return SearchConfig(steps=steps, rate_weight=rate)


ReferenceAdaptOpt = adapt_option(
    REFERENCE_ADAPT_STEPS, "a --speaker-wav/--target-wav voice on its recordings"
)
ExactOpt = typer.Option(
    False,
    "--exact",
    help="Generate as one stream (slower, no segment seams; see docs/synthesis.md).",
)


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors.")):
    _state["debug"] = debug


@contextlib.contextmanager
def errors():
    """Turn user-caused problems into one line on stderr and exit status 2."""
    try:
        yield
    except SpeechVQError as exc:
        if _state["debug"]:
            raise
        typer.echo(f"speechvq: error: {exc}", err=True)
        raise typer.Exit(2) from None
    except BrokenPipeError:  # `speechvq info | head -3`: the reader has gone, quietly
        _silence_stdout()
        raise typer.Exit(141) from None  # as a process killed by SIGPIPE
    except OSError as exc:  # disk full, permission denied: still one line
        if _state["debug"]:
            raise
        typer.echo(f"speechvq: error: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt as exc:
        typer.echo("speechvq: interrupted", err=True)
        raise typer.Exit(143 if isinstance(exc, _Terminated) else 130) from None
    except Exception as exc:  # a bug, not the user's fault: still one line, status 1
        if _state["debug"] or isinstance(exc, _TYPER_EXITS):
            raise
        text = (str(exc).strip() or "no message").splitlines()[0]
        typer.echo(
            f"speechvq: internal error: {type(exc).__name__}: {text}"
            " (rerun with --debug for the traceback)",
            err=True,
        )
        raise typer.Exit(1) from None


# A command's own exits pass through. typer >= 0.26 bundles its own click, and
# `typer.Exit` is no longer click's, so name typer's classes (not click's).
_TYPER_EXITS = (typer.Exit, typer.Abort, typer.exceptions.TyperException)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises nothing more."""
    import os
    import sys

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that `atomic_output` removes its temporary file."""


def on_sigterm(signum, frame) -> None:
    raise _Terminated()


def check_output(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise SpeechVQError(f"{path}: already exists (use --force to overwrite)")
    if path.is_dir():
        raise SpeechVQError(f"{path}: is a directory")


def load_model(model: str | None):
    from speechvq.inference.loading import load

    return load(model)


def names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def pick_voice(
    m, name: str | None, wavs: list[Path] | None, name_opt: str, wav_opt: str, adapt: int
):
    """The voice a command was given, as a name or recordings: (what `decode` takes, a label).
    `adapt`: steps of tuning a recorded voice's vector on its recordings (`--adapt`)."""
    from speechvq.audio.io import load_audio

    if (name is None) == (not wavs):
        raise SpeechVQError(f"give either {name_opt} NAME or {wav_opt} FILE")
    if name is not None:
        m.speaker_id(name)  # an unknown name fails here, listing the known ones
        return name, name
    recordings = [load_audio(path, m.sample_rate) for path in wavs]
    try:
        voice = m.voice(recordings, adapt_steps=adapt, progress=True)
    except SpeechVQError as exc:
        raise SpeechVQError(f"{', '.join(map(str, wavs))}: {exc}") from None
    return voice, "the voice of " + ", ".join(p.name for p in wavs)


DEFAULT_SEND_VOICE = 1.5  # seconds of a live input its voice is measured on (docs/streaming.md)


def sender_voice_seconds(m, option: float | None, voice_given: bool) -> float | None:
    """`--send-voice`: None (the default) is `DEFAULT_SEND_VOICE` for a model with a
    speaker encoder whose stream names no voice, 0 is never."""
    if option is None:
        return DEFAULT_SEND_VOICE if m.speaker_encoder is not None and not voice_given else None
    return option or None
