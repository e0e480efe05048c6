"""The measuring commands: evaluate, analyze-phonemes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from speechvq.cli.common import (
    ForceOpt,
    ModelOpt,
    SearchRateOpt,
    adapt_option,
    app,
    errors,
    load_model,
    names,
    search_config,
)
from speechvq.config import COMPRESS_ADAPT_STEPS, REFERENCE_ADAPT_STEPS


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
    convert_to_wav: Path | None = typer.Option(
        None,
        "--convert-to-wav",
        help="Also convert every file one-shot to the voices recorded here, one sub-folder per "
        "target (a model with a speaker encoder): the first files, 3 s or more, are the "
        "reference, the others judge the result.",
    ),
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
    adapt: int = adapt_option(
        COMPRESS_ADAPT_STEPS, "each file's own voice on the file, as compress does,"
    ),
    target_adapt: int = typer.Option(
        REFERENCE_ADAPT_STEPS,
        "--target-adapt",
        min=0,
        metavar="STEPS",
        help="Tune each --convert-to-wav target's vector on its reference this many steps "
        "(as convert --adapt).",
    ),
    by_name: bool = typer.Option(
        False,
        "--by-name",
        help="Decode the files of speakers the model knows by their name (the stored voice, "
        "as decompress --speaker NAME), not in the voice measured from each file.",
    ),
    search: int | None = typer.Option(
        None,
        "--search",
        min=0,
        metavar="STEPS",
        help="Score the codes searched by synthesis this many steps per window, as compress "
        "--search STEPS writes them, as the system 'speechvq+search'. Default: as compress "
        "searches by default; 0: not.",
    ),
    search_rate: float = SearchRateOpt,
    force: bool = ForceOpt,
):
    """Score the model's reconstructions (and conversions) beside classic codecs."""
    with errors():
        from speechvq.data.discovery import find_recordings
        from speechvq.evaluation.evaluate import EvaluationOptions
        from speechvq.evaluation.evaluate import evaluate as run_evaluation
        from speechvq.evaluation.report import check_report_dir, write_report

        check_report_dir(out, force=force)
        options = EvaluationOptions(
            baselines=names(baselines),
            convert_to=names(convert_to),
            metrics=names(metrics),
            seed=seed,
            adapt_steps=adapt,
            target_adapt_steps=target_adapt,
            by_name=by_name,
        )  # validates names before the slow part
        items = find_recordings(source, split=split)[: limit or None]
        refs = find_recordings(references, split="train") if references is not None else []
        wav_targets = find_recordings(convert_to_wav) if convert_to_wav is not None else []
        m = None if baselines_only else load_model(model)
        if m is not None:
            options = dataclasses.replace(options, search=search_config(m, search, search_rate))
        report = run_evaluation(m, items, options, refs, wav_targets)
        paths = write_report(report, out, force=True)
        typer.echo(f"{out}: {len(report.items)} files; " + ", ".join(p.name for p in paths))


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
    with errors():
        from speechvq.analysis.report import PhonemeOptions
        from speechvq.analysis.report import analyze_phonemes as run_analysis
        from speechvq.data.discovery import find_recordings

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
            load_model(model),
            [r.path for r in find_recordings(source)],
            alignments,
            out,
            options,
            progress=True,
        )
        typer.echo(report.summary())
        typer.echo(f"report: {out / 'report.md'}")
