"""The `speechvq` command line: a thin layer over the library.

Each command parses its arguments and calls library functions that tests
call directly. A user-caused problem (`SpeechVQError`) prints one line on
stderr and exits with status 2; `--debug` shows the traceback instead.
Outputs are written atomically and an existing output is kept unless
`--force`.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import warnings
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
ExactOpt = typer.Option(
    False,
    "--exact",
    help="Generate as one stream (slower, no segment seams; see docs/synthesis.md).",
)


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


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that `atomic_output` removes its temporary file."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated()


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
        wave, sr = load_audio(input, m.sample_rate)  # streamed resampling: bounded memory
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
    exact: bool = ExactOpt,
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
        wave = m.decode(codes, speaker, temperature=temperature, seed=seed, exact=exact)
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
    exact: bool = ExactOpt,
    force: bool = ForceOpt,
):
    """Voice conversion: encode the input, decode it as another speaker."""
    with _errors():
        from speechvq.audio import load_audio, save_audio

        _check_output(output, force)
        m = _load_model(model)
        m.speaker_id(target_speaker)
        wave, sr = load_audio(input, m.sample_rate)
        out = m.convert(wave, sr, target_speaker, temperature=temperature, seed=seed, exact=exact)
        save_audio(output, out, m.sample_rate)
        typer.echo(f"{output}: {len(out) / m.sample_rate:.2f} s as {target_speaker}")


@app.command()
def speakers(model: str | None = ModelOpt):
    """List the model's speakers (valid for --speaker / --target-speaker)."""
    with _errors():
        for name in _load_model(model).speakers:
            typer.echo(name)


def _decoder_line(cfg) -> str:
    if cfg.decoder.kind == "source-filter":
        sf = cfg.decoder.source_filter
        return f"source-filter (harmonic-plus-noise, {sf.harmonics} harmonics, {sf.layers} layers)"
    w = cfg.decoder.wavenet
    return f"WaveNet ({w.layers} layers, receptive field {w.receptive_field} samples)"


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
            ("decoder", _decoder_line(cfg)),
            ("pitch path", "on" if cfg.pitch.enabled else "off"),
            ("speakers", str(len(cfg.speakers))),
            ("parameters", f"{m.num_parameters():,}"),
            ("package version", m.metadata.get("package_version", "?")),
        ]
        for key in ("training_steps", "training_hours", "trained_on"):
            if key in m.metadata:
                rows.append((key.replace("_", " "), m.metadata[key]))
        if m.prior is not None:
            p = m.prior.config
            rows.append(
                ("prior", f"{p.wavenet.layers} layers, receptive field {p.receptive_field} codes")
            )
        if "prior_bits_per_code" in m.metadata:
            rows.append(
                (
                    "prior held out",
                    f"{m.metadata['prior_bits_per_code']} bits/code = "
                    f"{m.metadata['prior_bitrate']} bit/s",
                )
            )
        width = max(len(k) for k, _ in rows)
        for k, v in rows:
            typer.echo(f"{k:<{width}}  {v}")


@app.command()
def prepare(
    corpora: list[str] = typer.Argument(
        ..., help="Corpus folders, each DIR or DIR:LAYOUT, then the output folder."
    ),
    out_dir: Path = typer.Argument(..., help="Prepared-corpus folder to write."),
    layout: str = typer.Option("auto", help="auto|vctk|librispeech|folder (DIR:LAYOUT wins)."),
    sample_rate: int = typer.Option(16000, help="Model sample rate."),
    heldout: float = typer.Option(0.05, help="Share of each speaker's utterances for valid."),
    heldout_speakers: str = typer.Option("", help="Comma-separated speakers held out whole."),
    f0_method: str = typer.Option("harvest", help="F0 tracker: harvest (better) or dio (faster)."),
    workers: int = typer.Option(2, help="Processes for F0 extraction."),
    no_trim: bool = typer.Option(False, "--no-trim", help="Keep leading/trailing silence."),
    force: bool = ForceOpt,
):
    """Prepare corpora for training: resample, trim, F0, manifest (docs/data.md)."""
    with _errors():
        from speechvq.layouts import parse_source
        from speechvq.prepare import PrepareConfig, prepare_corpus

        config = PrepareConfig(
            sample_rate=sample_rate,
            heldout=heldout,
            heldout_speakers=_names(heldout_speakers),
            f0_method=f0_method,
            workers=workers,
            trim=not no_trim,
        )
        sources = [parse_source(c, layout) for c in corpora]
        summary = prepare_corpus(sources, out_dir, config, force=force)
        typer.echo(summary.table())


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


@app.command()
def evaluate(
    source: Path = typer.Argument(
        ..., help="Folder of audio files (searched recursively), or a prepared corpus folder."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Report folder to write."),
    model: str | None = ModelOpt,
    baselines: str = typer.Option(
        "codec2-2400,codec2-3200,opus-6k",
        "--baselines",
        help="Classic codecs to compare: codec2-<mode>, opus-<N>k, comma-separated ('none').",
    ),
    convert_to: str = typer.Option(
        "", "--convert-to", help="Also convert every file to these speakers (comma-separated)."
    ),
    metrics: str = typer.Option(
        "stoi,pesq,mel,speaker,dnsmos,f0", "--metrics", help="Metric groups to compute."
    ),
    split: str = typer.Option("valid", "--split", help="Split of a prepared corpus to use."),
    limit: int | None = typer.Option(None, "--limit", "-n", help="Evaluate the first N files."),
    references: Path | None = typer.Option(
        None,
        "--references",
        help="Recordings of the --convert-to speakers (folder or prepared corpus, its train "
        "split) for their centroids; they are not converted or scored.",
    ),
    baselines_only: bool = typer.Option(
        False, "--baselines-only", help="Score only the baseline codecs (no model)."
    ),
    seed: int = typer.Option(0, "--seed", help="Decoder sampling seed."),
    force: bool = ForceOpt,
):
    """Score the model's reconstructions (and conversions) beside classic codecs."""
    with _errors():
        from speechvq.discovery import find_recordings
        from speechvq.evaluate import EvaluationOptions
        from speechvq.evaluate import evaluate as run_evaluation
        from speechvq.evaluation_report import check_report_dir, write_report

        check_report_dir(out, force=force)
        options = EvaluationOptions(
            baselines=_names(baselines),
            convert_to=_names(convert_to),
            metrics=_names(metrics),
            seed=seed,
        )  # validates names before the slow part
        items = find_recordings(source, split=split)[: limit or None]
        refs = find_recordings(references, split="train") if references is not None else []
        m = None if baselines_only else _load_model(model)
        report = run_evaluation(m, items, options, refs)
        paths = write_report(report, out, force=True)
        typer.echo(f"{out}: {len(report.items)} files; " + ", ".join(p.name for p in paths))


@app.command()
def train(
    manifest: Path = typer.Argument(..., help="Prepared corpus folder (from `speechvq prepare`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: checkpoints, log, model."),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Training config YAML (e.g. recipes/configs/small.yaml)."
    ),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop after this step."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
    init_from: str | None = typer.Option(
        None,
        "--init-from",
        help="Start from this model file's weights (e.g. a shipped model), fresh optimiser.",
    ),
    init_parts: str | None = typer.Option(
        None,
        "--init-parts",
        help="What --init-from takes: all (its config too), encoder, or matching "
        "(every tensor that fits this config). Default: the config's, else all.",
    ),
):
    """Train a VQ-VAE on a prepared corpus (CPU, GPU, or `torchrun --nproc_per_node N`)."""
    with _errors():
        from speechvq.train import TrainConfig
        from speechvq.train import train as run_training

        cfg = TrainConfig.from_yaml(config, init_parts=init_parts)
        if init_from is not None and resume:
            raise SpeechVQError("--init-from starts a new run; it cannot be used with --resume")
        if init_from is not None:
            from speechvq.pretrained import resolve

            init_from = str(resolve(init_from))
        result = run_training(
            manifest, out, cfg, resume=resume, max_steps=max_steps, init_from=init_from
        )
        state = "interrupted at" if result.interrupted else "finished at"
        typer.echo(f"{out}: {state} step {result.steps}; model: {result.model_path}")


@app.command("train-prior")
def train_prior(
    manifest: Path = typer.Argument(..., help="Prepared corpus folder (from `speechvq prepare`)."),
    model: str = typer.Option(
        ..., "--model", "-m", help="The trained VQ-VAE whose codes the prior models."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Run folder: code cache, checkpoints, log, model."
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Prior config YAML (e.g. recipes/configs/prior-small.yaml)."
    ),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop after this step."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
):
    """Train the WaveNet prior over a VQ-VAE's codes (OUT/model.safetensors holds both)."""
    with _errors():
        import math

        from speechvq.train_prior import PriorTrainConfig
        from speechvq.train_prior import train_prior as run_prior_training

        cfg = PriorTrainConfig.from_yaml(config)
        r = run_prior_training(manifest, model, out, cfg, resume=resume, max_steps=max_steps)
        state = "interrupted at" if r.interrupted else "finished at"
        bits = ""
        if not math.isnan(r.valid_bits_per_code):
            rate = r.valid_bits_per_code * 250
            bits = f"; held out {r.valid_bits_per_code:.3f} bits/code ({rate:.0f} bit/s)"
        typer.echo(f"{out}: {state} step {r.steps}; model: {r.model_path}{bits}")


@app.command()
def sample(
    output: Path = typer.Argument(..., help="Audio file to write (wav)."),
    seconds: float = typer.Option(3.0, "--seconds", help="Length of the sample."),
    speaker: str | None = typer.Option(
        None, "--speaker", "-s", help="Voice (default: the model's first)."
    ),
    model: str | None = ModelOpt,
    temperature: float = TempOpt,
    seed: int | None = SeedOpt,
    force: bool = ForceOpt,
):
    """Make up speech: sample codes from the model's prior, then decode them."""
    with _errors():
        from speechvq.audio import save_audio
        from speechvq.prior import sample_speech

        _check_output(output, force)
        m = _load_model(model)
        wave = sample_speech(m, seconds, speaker, temperature, seed)
        save_audio(output, wave, m.sample_rate)
        typer.echo(f"{output}: {len(wave) / m.sample_rate:.2f} s sampled from the prior")


@app.command()
def compress(
    input: Path = typer.Argument(..., help="Speech to compress."),
    output: Path = typer.Argument(..., help=".svq file to write."),
    model: str | None = ModelOpt,
    speaker: str | None = typer.Option(
        None, "--speaker", "-s", help="Default voice stored in the file."
    ),
    entropy: str = typer.Option(
        "auto",
        "--entropy",
        help="Entropy model: auto (the prior if the model has one), prior, adaptive or uniform.",
    ),
    report: bool = typer.Option(False, "--report", help="Print the bits per second achieved."),
    force: bool = ForceOpt,
):
    """Encode speech and entropy-code its codes into a self-describing .svq file."""
    with _errors():
        from speechvq.audio import load_audio
        from speechvq.codec import compress as compress_file

        _check_output(output, force)
        m = _load_model(model)
        wave, sr = load_audio(input, m.sample_rate)
        header = compress_file(
            m,
            wave,
            sr,
            output,
            entropy=entropy,
            speaker=speaker,
            force=force,
        )
        typer.echo(f"{output}: {header.num_frames} codes, {header.payload_bytes} bytes")
        if report:
            per_code = header.payload_bytes * 8 / header.num_frames
            nominal = m.config.nominal_bitrate
            typer.echo(
                f"  {header.bits_per_second:,.0f} bit/s ({per_code:.2f} bits/code, entropy "
                f"model {header.entropy_model}; nominal {nominal:,.0f} bit/s)"
            )


@app.command()
def decompress(
    input: Path = typer.Argument(..., help=".svq file (from `speechvq compress`)."),
    output: Path = typer.Argument(..., help="Audio file to write (wav)."),
    model: str | None = ModelOpt,
    speaker: str | None = typer.Option(
        None, "--speaker", "-s", help="Voice to decode with (default: the file's)."
    ),
    temperature: float = TempOpt,
    seed: int | None = SeedOpt,
    force: bool = ForceOpt,
):
    """Decode an .svq file back to speech (the codes come back exactly)."""
    with _errors():
        from speechvq.audio import save_audio
        from speechvq.codec import decompress as decompress_file

        _check_output(output, force)
        m = _load_model(model)
        if speaker is not None:
            m.speaker_id(speaker)  # an unknown voice fails before the slow part
        wave = decompress_file(
            m,
            input,
            speaker=speaker,
            temperature=temperature,
            seed=seed,
        )
        save_audio(output, wave, m.sample_rate)
        typer.echo(f"{output}: {len(wave) / m.sample_rate:.2f} s")


@app.command("analyze-phonemes")
def analyze_phonemes(
    source: Path = typer.Argument(
        ..., help="Folder of audio (recursive) or a prepared corpus (manifest.tsv)."
    ),
    alignments: Path = typer.Option(
        ..., "--alignments", "-a", help="Folder of .lab/.phn/.TextGrid files, matched by name."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Report folder: report.md/json, plots."),
    model: str | None = ModelOpt,
    pool: int = typer.Option(
        1, "--pool", min=1, help="Frames per unit (most frequent code); 10 = the paper's 25 Hz."
    ),
    merge_repeats: bool = typer.Option(
        False, "--merge-repeats", help="Merge runs of one code into one unit."
    ),
    fit_fraction: float = typer.Option(
        0.5, "--fit-fraction", help="Share of utterances the code-to-phone mapping is fit on."
    ),
    seed: int = typer.Option(0, "--seed"),
    random_baseline: bool = typer.Option(True, "--random-baseline/--no-random-baseline"),
    plots: bool = typer.Option(True, "--plots/--no-plots"),
    force: bool = ForceOpt,
):
    """How codes learned without labels line up with phonemes (VQ-VAE §4.3)."""
    with _errors():
        from speechvq.discovery import find_recordings
        from speechvq.phoneme_report import PhonemeOptions
        from speechvq.phoneme_report import analyze_phonemes as run_analysis

        options = PhonemeOptions(
            pool=pool,
            merge_repeats=merge_repeats,
            fit_fraction=fit_fraction,
            seed=seed,
            random_baseline=random_baseline,
            plots=plots,
            force=force,
        )
        report = run_analysis(
            _load_model(model),
            [r.path for r in find_recordings(source)],
            alignments,
            out,
            options,
            progress=True,
        )
        typer.echo(report.summary())
        typer.echo(f"report: {out / 'report.md'}")


def main() -> None:
    # One line per warning (e.g. "output clipped"), not Python's two with a source line.
    warnings.formatwarning = lambda message, *args, **kwargs: f"speechvq: warning: {message}\n"
    # The default SIGTERM action kills at once and leaves temporary files behind;
    # raising instead unwinds `atomic_output`. `train` installs its own handler
    # (checkpoint, then stop) for the length of its loop.
    signal.signal(signal.SIGTERM, _on_sigterm)
    app()


if __name__ == "__main__":
    sys.exit(main())
