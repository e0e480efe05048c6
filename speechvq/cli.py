"""The `speechvq` command line: a thin layer over the library.

Each command parses its arguments and calls library functions that tests
call directly. A user-caused problem (`SpeechVQError`) prints one line on
stderr and exits with status 2; `--debug` shows the traceback instead.
Outputs are written atomically and an existing output is kept unless
`--force`.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import typer

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


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors.")):
    _state["debug"] = debug


@contextlib.contextmanager
def _errors():
    """Turn user-caused problems into one line on stderr and exit status 2."""
    try:
        yield
    except SpeechVQError as exc:
        if _state["debug"]:
            raise
        typer.echo(f"speechvq: error: {exc}", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:  # disk full, permission denied: still one line
        if _state["debug"]:
            raise
        typer.echo(f"speechvq: error: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.echo("speechvq: interrupted", err=True)
        raise typer.Exit(130) from None


def _check_output(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise SpeechVQError(f"{path}: already exists (use --force to overwrite)")
    if path.is_dir():
        raise SpeechVQError(f"{path}: is a directory")


def _load_model(model: str | None):
    import speechvq

    return speechvq.load(model)


@app.command()
def encode(
    input: Path = typer.Argument(..., help="Audio file (wav, flac, ogg; any rate)."),
    output: Path = typer.Argument(..., help="Codes .npy file to write."),
    model: str | None = ModelOpt,
    force: bool = ForceOpt,
):
    """Encode speech into discrete codes (a plain integer .npy, one code per frame)."""
    with _errors():
        from speechvq.audio import load_audio
        from speechvq.codesio import save_codes

        _check_output(output, force)
        m = _load_model(model)
        wave, sr = load_audio(input)
        codes = m.encode(wave, sr)
        save_codes(output, codes)
        typer.echo(f"{output}: {len(codes)} codes ({len(codes) / m.frame_rate:.2f} s)")


@app.command()
def decode(
    input: Path = typer.Argument(..., help="Codes .npy file (from `speechvq encode`)."),
    output: Path = typer.Argument(..., help="Audio file to write (wav)."),
    speaker: str = typer.Option(..., "--speaker", "-s", help="Speaker to decode with."),
    model: str | None = ModelOpt,
    temperature: float = TempOpt,
    seed: int | None = SeedOpt,
    force: bool = ForceOpt,
):
    """Synthesise speech from codes in a given speaker's voice."""
    with _errors():
        from speechvq.audio import save_audio
        from speechvq.codesio import load_codes

        _check_output(output, force)
        m = _load_model(model)
        m.speaker_id(speaker)
        codes = load_codes(input, m.config.quantizer.codebook_size)
        wave = m.decode(codes, speaker, temperature=temperature, seed=seed)
        save_audio(output, wave, m.sample_rate)
        typer.echo(f"{output}: {len(wave) / m.sample_rate:.2f} s as {speaker}")


@app.command()
def convert(
    input: Path = typer.Argument(..., help="Speech to convert."),
    output: Path = typer.Argument(..., help="Audio file to write (wav)."),
    target_speaker: str = typer.Option(..., "--target-speaker", "-s", help="Target voice."),
    model: str | None = ModelOpt,
    temperature: float = TempOpt,
    seed: int | None = SeedOpt,
    force: bool = ForceOpt,
):
    """Voice conversion: encode the input, decode it as another speaker."""
    with _errors():
        from speechvq.audio import load_audio, save_audio

        _check_output(output, force)
        m = _load_model(model)
        m.speaker_id(target_speaker)
        wave, sr = load_audio(input)
        out = m.convert(wave, sr, target_speaker, temperature=temperature, seed=seed)
        save_audio(output, out, m.sample_rate)
        typer.echo(f"{output}: {len(out) / m.sample_rate:.2f} s as {target_speaker}")


@app.command()
def speakers(model: str | None = ModelOpt):
    """List the model's speakers (valid for --speaker / --target-speaker)."""
    with _errors():
        for name in _load_model(model).speakers:
            typer.echo(name)


@app.command()
def info(model: str | None = ModelOpt):
    """Describe a model: rates, codebook, bitrate, size, training."""
    with _errors():
        m = _load_model(model)
        cfg = m.config
        rows = [
            ("sample rate", f"{cfg.sample_rate} Hz"),
            ("hop", f"{cfg.hop_length} samples ({cfg.frame_rate:g} frames/s)"),
            ("codebook", f"K = {cfg.quantizer.codebook_size}, D = {cfg.quantizer.dim}"),
            ("nominal bitrate", f"{cfg.nominal_bitrate:g} bit/s"),
            ("pitch path", "on" if cfg.pitch.enabled else "off"),
            ("speakers", str(len(cfg.speakers))),
            ("parameters", f"{m.num_parameters():,}"),
            ("package version", m.metadata.get("package_version", "?")),
        ]
        for key in ("training_steps", "training_hours", "trained_on"):
            if key in m.metadata:
                rows.append((key.replace("_", " "), m.metadata[key]))
        width = max(len(k) for k, _ in rows)
        for k, v in rows:
            typer.echo(f"{k:<{width}}  {v}")


@app.command()
def train(
    manifest: Path = typer.Argument(..., help="Prepared corpus folder (from `speechvq prepare`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: checkpoints, log, model."),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Training config YAML (e.g. recipes/configs/small.yaml)."
    ),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop after this step."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
):
    """Train a VQ-VAE on a prepared corpus (CPU, GPU, or `torchrun --nproc_per_node N`)."""
    with _errors():
        from speechvq.train import TrainConfig
        from speechvq.train import train as run_training

        cfg = TrainConfig.from_yaml(config)
        result = run_training(manifest, out, cfg, resume=resume, max_steps=max_steps)
        state = "interrupted at" if result.interrupted else "finished at"
        typer.echo(f"{out}: {state} step {result.steps}; model: {result.model_path}")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
