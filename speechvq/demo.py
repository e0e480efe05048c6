"""`make demo`: the main job with the shipped model, on an input the project ships.

Converts `examples/demo.wav` (synthesised by this project with espeak-ng) to
several speakers, converts it one-shot to the voice of the reference
recording `examples/reference.wav` (another espeak-ng voice) with a
speaker-encoder model (the default one if it has a speaker encoder, else the
shipped `small-spk`), samples 3 s from the prior when the model has one, and
writes everything under `out/` with a line for each file.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from speechvq.errors import SpeechVQError

REPO = Path(__file__).resolve().parents[1]
DEMO_INPUT = REPO / "examples" / "demo.wav"
DEMO_REFERENCE = REPO / "examples" / "reference.wav"
SPEAKER_MODEL = "small-spk"  # the shipped speaker-encoder model, if the default has none
TARGETS = ("p225", "p226", "p227", "p228")


def run(
    out_dir: Path = Path("out"),
    model_name: str | None = None,
    seed: int = 0,
    seconds_limit: float | None = None,
) -> list[Path]:
    """Convert the demo input to up to four speakers and sample from the prior.

    `seconds_limit` shortens the input (tests use it: tiny models decode slowly).
    """
    from speechvq.audio.io import load_audio, save_audio
    from speechvq.inference.loading import load

    model = load(model_name)
    out_dir.mkdir(parents=True, exist_ok=True)
    wave, sr = load_audio(DEMO_INPUT)
    if seconds_limit is not None:
        wave = wave[: int(seconds_limit * sr)]
    targets = [s for s in TARGETS if s in model.speakers] or list(model.speakers[:4])
    written = []
    print(f"model: {len(model.speakers)} speakers, {model.config.nominal_bitrate:,.0f} bit/s")
    print(f"input: {DEMO_INPUT.relative_to(REPO)} ({len(wave) / sr:.2f} s)")
    codes = model.encode(wave, sr)
    for spk in targets:
        t0 = time.time()
        out = model.decode(codes, spk, seed=seed)
        path = save_audio(out_dir / f"convert_{spk}.wav", out, model.sample_rate)
        written.append(path)
        print(f"{path}: demo input in the voice of {spk} ({time.time() - t0:.1f} s)")
    written.append(_one_shot(model, wave, sr, out_dir, seed))
    if model.prior is not None:
        from speechvq.inference.sampling import sample_speech

        t0 = time.time()
        out = sample_speech(model, 3.0, targets[0], temperature=1.0, seed=seed)
        path = save_audio(out_dir / "sample_3s.wav", out, model.sample_rate)
        written.append(path)
        print(f"{path}: 3 s sampled from the prior as {targets[0]} ({time.time() - t0:.1f} s)")
    else:
        print("(this model has no prior: no sample)")
    return written


def _one_shot(model, wave, sr: int, out_dir: Path, seed: int) -> Path:
    """The demo input in the voice of `DEMO_REFERENCE`, by a speaker-encoder model."""
    from speechvq.audio.io import load_audio, save_audio
    from speechvq.inference.loading import load

    name = "the default model"
    if model.speaker_encoder is None:
        model, name = load(SPEAKER_MODEL), SPEAKER_MODEL
    t0 = time.time()
    voice = model.voice([load_audio(DEMO_REFERENCE)])
    out = model.convert(wave, sr, voice, seed=seed)
    path = save_audio(out_dir / "convert_to_reference.wav", out, model.sample_rate)
    print(
        f"{path}: demo input in the voice of {DEMO_REFERENCE.relative_to(REPO)}, one-shot "
        f"({name}, {time.time() - t0:.1f} s)"
    )
    return path


def main() -> None:
    import warnings

    # One line per warning, as the CLI prints them.
    warnings.formatwarning = lambda message, *args, **kwargs: f"speechvq: warning: {message}\n"
    try:
        run()
    except SpeechVQError as exc:
        print(f"speechvq demo: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
