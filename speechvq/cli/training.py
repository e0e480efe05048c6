"""The training commands: prepare, pack, unpack, train, log, train-prior."""

from __future__ import annotations

from pathlib import Path

import typer

from speechvq.cli.common import ForceOpt, app, check_output, errors, names
from speechvq.errors import SpeechVQError


@app.command()
def prepare(
    corpora: list[str] = typer.Argument(
        ..., help="Corpus folders, each DIR or DIR:LAYOUT, then the output folder."
    ),
    out_dir: Path = typer.Argument(..., help="Prepared-corpus folder to write."),
    layout: str = typer.Option(
        "auto", help="auto|vctk|librispeech|kaldi|folder (DIR:LAYOUT wins)."
    ),
    sample_rate: int = typer.Option(16000, help="Model sample rate."),
    heldout: float = typer.Option(0.05, help="Share of each speaker's utterances for valid."),
    heldout_speakers: str = typer.Option("", help="Comma-separated speakers held out whole."),
    f0_method: str = typer.Option("harvest", help="F0 tracker: harvest (better) or dio (faster)."),
    workers: int = typer.Option(2, help="Processes for F0 extraction."),
    no_trim: bool = typer.Option(False, "--no-trim", help="Keep leading/trailing silence."),
    force: bool = ForceOpt,
):
    """Prepare corpora for training: resample, trim, F0, manifest (docs/data.md)."""
    with errors():
        from speechvq.data.layouts import parse_source
        from speechvq.data.prepare import PrepareConfig, prepare_corpus

        config = PrepareConfig(
            sample_rate=sample_rate,
            heldout=heldout,
            heldout_speakers=names(heldout_speakers),
            f0_method=f0_method,
            workers=workers,
            trim=not no_trim,
        )
        sources = [parse_source(c, layout) for c in corpora]
        summary = prepare_corpus(sources, out_dir, config, force=force)
        typer.echo(summary.table())


@app.command()
def pack(
    prepared: Path = typer.Argument(..., help="Prepared corpus folder (from `speechvq prepare`)."),
    out_dir: Path = typer.Argument(..., help="Packed folder to write."),
    minutes: float = typer.Option(20.0, help="Training audio to keep (every speaker keeps one)."),
    valid_minutes: float = typer.Option(2.0, help="Held-out audio to keep (likewise)."),
    max_seconds: float = typer.Option(
        4.0, help="Cut longer utterances to this many seconds (0: keep them whole)."
    ),
    seed: int = typer.Option(0, help="Seed of the choice of utterances and cuts."),
    force: bool = ForceOpt,
):
    """Pack a subset of a prepared corpus as FLAC, to carry to another machine (docs/data.md)."""
    with errors():
        from speechvq.data.packing import PackConfig, pack_corpus

        cfg = PackConfig(
            minutes=minutes,
            valid_minutes=valid_minutes,
            max_utterance_seconds=max_seconds,
            seed=seed,
        )
        typer.echo(pack_corpus(prepared, out_dir, cfg, force=force).line())


@app.command()
def unpack(
    packed: Path = typer.Argument(..., help="Packed folder (from `speechvq pack`)."),
    out_dir: Path = typer.Argument(..., help="Prepared-corpus folder to write."),
    force: bool = ForceOpt,
):
    """Turn a packed corpus back into a prepared one that `train` reads."""
    with errors():
        from speechvq.data.packing import unpack_corpus

        corpus = unpack_corpus(packed, out_dir, force=force)
        minutes = sum(u.duration for u in corpus.utterances()) / 60
        typer.echo(
            f"{corpus.path}: {len(corpus)} utterances, {len(corpus.speakers)} speakers, "
            f"{minutes:.1f} min"
        )


@app.command()
def train(
    manifest: Path = typer.Argument(..., help="Prepared corpus folder (from `speechvq prepare`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: checkpoints, log, model."),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Training config YAML (e.g. recipes/configs/small.yaml)."
    ),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop after this step."),
    max_minutes: float | None = typer.Option(
        None,
        "--max-minutes",
        help="Stop after this much wall-clock time, checkpointed (--resume goes on).",
    ),
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
    with errors():
        from speechvq.training.vqvae import TrainConfig
        from speechvq.training.vqvae import train as run_training

        cfg = TrainConfig.from_yaml(config, init_parts=init_parts)
        if init_from is not None and resume:
            raise SpeechVQError("--init-from starts a new run; it cannot be used with --resume")
        if init_from is not None:
            from speechvq.inference.loading import resolve

            init_from = str(resolve(init_from))
        result = run_training(
            manifest,
            out,
            cfg,
            resume=resume,
            max_steps=max_steps,
            init_from=init_from,
            max_minutes=max_minutes,
        )
        state = _stopped(result)
        typer.echo(f"{out}: {state} step {result.steps}; model: {result.model_path}")


@app.command("log")
def log(
    run: Path = typer.Argument(..., help="Run folder (from train or train-prior), or its log.csv."),
    every: int | None = typer.Option(
        None, "--every", help="Steps per row (default: at most about 20 rows)."
    ),
    keys: str = typer.Option(
        "", "--keys", help="Comma-separated figures (default: losses, the post-filter's, speed)."
    ),
    plot: Path | None = typer.Option(None, "--plot", help="Also draw them to this PNG."),
    force: bool = ForceOpt,
):
    """A training run's figures by range of steps, and a plot: is it still learning?"""
    with errors():
        from speechvq.training.run_log import (
            default_every,
            format_summary,
            plot_log,
            read_log,
            summarise,
        )

        if plot is not None:
            check_output(plot, force)
        run_log = read_log(run)
        chosen = list(names(keys)) or run_log.default_keys()
        step = every or default_every(run_log)
        typer.echo(format_summary(summarise(run_log, step, chosen), chosen))
        if plot is not None:
            typer.echo(f"plot: {plot_log(run_log, chosen, step, plot)}")


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
    max_minutes: float | None = typer.Option(
        None,
        "--max-minutes",
        help="Stop after this much wall-clock time, checkpointed (--resume goes on).",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
    init_from: str | None = typer.Option(
        None,
        "--init-from",
        help="Start from this model's prior (a file or name; the same architecture) instead of "
        "from scratch.",
    ),
    search: int | None = typer.Option(
        None,
        "--search",
        help="Learn the codes compress sends, searched this many steps (its default: 30), "
        "not the encoder's: about 3 s of one CPU thread per second of audio, once; an "
        "interrupted extraction goes on where it stopped. Default: the config's (0).",
    ),
    bigram: bool = typer.Option(
        False,
        "--bigram",
        help="Instead, make the packet streams' prefix code from the corpus's code bigrams "
        "(seconds; docs/streaming.md).",
    ),
):
    """Train the WaveNet prior over a VQ-VAE's codes (OUT/model.safetensors holds both)."""
    with errors():
        import math

        if bigram:
            from speechvq.training.packet_code import make_packet_code

            p = make_packet_code(manifest, model, out)
            rates = ", ".join(f"{r:,.0f} bit/s at {ms} ms" for ms, r in p.bitrates.items())
            held = f"; held out: {rates}" if rates else ""
            typer.echo(f"{p.model_path}: packet code from {p.train_codes:,} code pairs{held}")
            return

        from speechvq.training.prior import PriorTrainConfig
        from speechvq.training.prior import train_prior as run_prior_training

        overrides = {} if search is None else {"search_steps": search}
        cfg = PriorTrainConfig.from_yaml(config, **overrides)
        r = run_prior_training(
            manifest,
            model,
            out,
            cfg,
            resume=resume,
            init_from=init_from,
            max_steps=max_steps,
            max_minutes=max_minutes,
        )
        state = _stopped(r)
        bits = ""
        if not math.isnan(r.valid_bits_per_code):
            rate = r.valid_bits_per_code * 250
            bits = f"; held out {r.valid_bits_per_code:.3f} bits/code ({rate:.0f} bit/s)"
        typer.echo(f"{out}: {state} step {r.steps}; model: {r.model_path}{bits}")


def _stopped(result) -> str:
    """How a training run's call ended, for its last line."""
    if result.out_of_time:
        return "out of time (--max-minutes) at"
    return "interrupted at" if result.interrupted else "finished at"
