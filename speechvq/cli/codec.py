"""The codec and conversion commands: encode, decode, convert, compress, decompress,
sample, speakers, info."""

from __future__ import annotations

from pathlib import Path

import typer

from speechvq.cli.common import (
    DEFAULT_SEND_VOICE,
    ExactOpt,
    ForceOpt,
    ModelOpt,
    ReferenceAdaptOpt,
    SearchOpt,
    SearchRateOpt,
    SeedOpt,
    TempOpt,
    adapt_option,
    app,
    check_output,
    errors,
    load_model,
    pick_voice,
    search_config,
    sender_voice_seconds,
)
from speechvq.config import (
    COMPRESS_ADAPT_STEPS,
    CONVERT_BLEND,
    CONVERT_STRENGTH,
)
from speechvq.errors import SpeechVQError

SpeakerWavOpt = typer.Option(
    None,
    "--speaker-wav",
    help="Decode in the voice of these recordings (repeat for several files; needs a model "
    "with a speaker encoder).",
)
MatchCodesOpt = typer.Option(
    True,
    "--match/--no-match",
    help="With --speaker-wav, move the codes towards the recordings' voice first (their "
    "codebook rows to the statistics of the recordings' codes; docs/speaker.md).",
)


@app.command()
def encode(
    input: Path = typer.Argument(..., help="Audio file (wav, flac, ogg; any rate)."),
    output: Path = typer.Argument(..., help="Codes .npy file to write."),
    model: str | None = ModelOpt,
    force: bool = ForceOpt,
):
    """Encode speech into discrete codes (a plain integer .npy, one code per frame)."""
    with errors():
        from speechvq.audio.io import load_audio
        from speechvq.codec.codes import save_codes

        check_output(output, force)
        m = load_model(model)
        wave, sr = load_audio(input, m.sample_rate)  # streamed resampling: bounded memory
        codes = m.encode(wave, sr)
        save_codes(output, codes)
        typer.echo(f"{output}: {len(codes)} codes ({len(codes) / m.frame_rate:.2f} s)")


@app.command()
def decode(
    input: Path = typer.Argument(..., help="Codes .npy file (from `speechvq encode`)."),
    output: Path = typer.Argument(..., help="Audio file to write (wav)."),
    speaker: str | None = typer.Option(None, "--speaker", "-s", help="Speaker to decode with."),
    speaker_wav: list[Path] | None = SpeakerWavOpt,
    match: bool = MatchCodesOpt,
    adapt: int = ReferenceAdaptOpt,
    model: str | None = ModelOpt,
    temperature: float = TempOpt,
    seed: int | None = SeedOpt,
    exact: bool = ExactOpt,
    force: bool = ForceOpt,
):
    """Synthesise speech from codes in a given speaker's voice (a name or a recording)."""
    with errors():
        from speechvq.audio.io import save_audio
        from speechvq.codec.codes import load_codes

        check_output(output, force)
        m = load_model(model)
        voice, name = pick_voice(m, speaker, speaker_wav, "--speaker", "--speaker-wav", adapt)
        codes = load_codes(input, m.config.quantizer.codebook_size)
        if match:  # a voice from --speaker-wav; a name is left as it is
            codes = m.match_codes(codes, voice)
        wave = m.decode(codes, voice, temperature=temperature, seed=seed, exact=exact)
        save_audio(output, wave, m.sample_rate)
        typer.echo(f"{output}: {len(wave) / m.sample_rate:.2f} s as {name}")


@app.command()
def convert(
    input: Path = typer.Argument(..., help="Speech to convert."),
    output: Path = typer.Argument(..., help="Audio file to write (wav)."),
    target_speaker: str | None = typer.Option(
        None, "--target-speaker", "-s", help="Target voice: a speaker of the model."
    ),
    target_wav: list[Path] | None = typer.Option(
        None,
        "--target-wav",
        help="Target voice: recordings of it, a few seconds in all (repeat for several files;"
        " needs a model with a speaker encoder).",
    ),
    match: bool = typer.Option(
        True,
        "--match/--no-match",
        help="With --target-wav, move the input's latents to the statistics of the "
        "reference's before quantising them (docs/speaker.md).",
    ),
    pitch: bool = typer.Option(
        True,
        "--pitch/--no-pitch",
        help="Give the output the input's own intonation (its tracked F0 in the target's "
        "register); --no-pitch predicts F0 from the codes.",
    ),
    strength: float = typer.Option(
        CONVERT_STRENGTH,
        "--strength",
        min=0.0,
        max=3.0,
        help="With --target-wav, how far to aim along the line from the input's own voice "
        "to the target's: 1 is the target itself; above 1 overshoots it, which makes up for "
        "the part of the input's voice that the codes keep (docs/speaker.md).",
    ),
    blend: float = typer.Option(
        CONVERT_BLEND,
        "--blend",
        min=0.0,
        max=1.0,
        help="With --target-wav, then move each frame this far (1: all the way) towards "
        "its nearest frames of the reference recordings (docs/speaker.md).",
    ),
    adapt: int = ReferenceAdaptOpt,
    model: str | None = ModelOpt,
    temperature: float = TempOpt,
    seed: int | None = SeedOpt,
    exact: bool = ExactOpt,
    force: bool = ForceOpt,
):
    """Voice conversion: encode the input, decode it as another speaker."""
    with errors():
        from speechvq.audio.io import load_audio, save_audio

        check_output(output, force)
        m = load_model(model)
        voice, name = pick_voice(
            m, target_speaker, target_wav, "--target-speaker", "--target-wav", adapt
        )
        wave, sr = load_audio(input, m.sample_rate)
        out = m.convert(
            wave,
            sr,
            voice,
            match=match,
            pitch=pitch,
            strength=strength,
            blend=blend,
            temperature=temperature,
            seed=seed,
            exact=exact,
        )
        save_audio(output, out, m.sample_rate)
        typer.echo(f"{output}: {len(out) / m.sample_rate:.2f} s as {name}")


@app.command()
def speakers(model: str | None = ModelOpt):
    """List the model's speakers (valid for --speaker / --target-speaker)."""
    with errors():
        for name in load_model(model).speakers:
            typer.echo(name)


@app.command()
def info(model: str | None = ModelOpt):
    """Describe a model: rates, codebook, bitrate, size, training."""
    with errors():
        from speechvq.inference.summary import describe_model

        rows = describe_model(load_model(model))
        width = max(len(k) for k, _ in rows)
        for k, v in rows:
            typer.echo(f"{k:<{width}}  {v}")


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
    with errors():
        from speechvq.audio.io import save_audio
        from speechvq.inference.sampling import sample_speech

        check_output(output, force)
        m = load_model(model)
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
    speaker_wav: list[Path] | None = typer.Option(
        None,
        "--speaker-wav",
        help="--stream: the voice stored in the stream's header, measured on these recordings "
        "(the sender's own, say; a file stores its input's own voice anyway).",
    ),
    entropy: str = typer.Option(
        "auto",
        "--entropy",
        help="Entropy model: auto (the prior if the model has one), prior, adaptive or uniform; "
        "with --stream: auto (the model's packet code table if it has one), bigram or fixed.",
    ),
    report: bool = typer.Option(False, "--report", help="Print the bits per second achieved."),
    pitch: bool = typer.Option(
        True,
        "--pitch/--no-pitch",
        help="Store the input's F0 as a pitch track (about 150 bit/s) for the decoder to "
        "follow; --no-pitch leaves F0 to the decoder's predictor. Not in --stream.",
    ),
    stream: bool = typer.Option(
        False,
        "--stream",
        help="Write a .svqs packet stream as the audio arrives (a streaming model); INPUT '-' "
        "reads raw 16-bit mono PCM from standard input, OUTPUT '-' writes to standard output.",
    ),
    rate: int = typer.Option(16000, "--rate", help="--stream: sample rate of the PCM input."),
    packet_ms: float = typer.Option(20.0, "--packet-ms", help="--stream: audio per packet."),
    send_voice: float | None = typer.Option(
        None,
        "--send-voice",
        metavar="SECONDS",
        help="--stream: measure the sender's voice on the first SECONDS of input and send it "
        "in the stream, so the receiver decodes in it (a model with a speaker encoder); 0: "
        f"never. Default {DEFAULT_SEND_VOICE:g} s for such a model with no --speaker or "
        "--speaker-wav.",
    ),
    adapt: int = adapt_option(
        COMPRESS_ADAPT_STEPS, "the voice stored in the file on the input (or --speaker-wav)"
    ),
    search: int | None = SearchOpt,
    search_rate: float = SearchRateOpt,
    force: bool = ForceOpt,
):
    """Encode speech and entropy-code its codes into a self-describing .svq file."""
    with errors():
        from speechvq.audio.io import load_audio
        from speechvq.inference.compression import compress as compress_file

        if str(output) != "-":
            check_output(output, force)
        m = load_model(model)
        voice = None
        if speaker_wav:
            if not stream:
                raise SpeechVQError("--speaker-wav needs --stream (a file keeps its own voice)")
            voice, _ = pick_voice(m, speaker, speaker_wav, "--speaker", "--speaker-wav", adapt)
        if send_voice is not None and not stream:
            raise SpeechVQError("--send-voice needs --stream (a file keeps its own voice)")
        if stream and (search or search_rate):
            raise SpeechVQError("--search needs a file, not --stream (it searches ahead)")
        if stream:
            from speechvq.cli.streaming import compress_stream

            seconds = sender_voice_seconds(m, send_voice, speaker is not None or voice is not None)
            comp = compress_stream(
                m, input, output, rate, packet_ms, speaker, entropy, voice, seconds
            )
            if report or str(output) != "-":
                sent = (
                    f"; the sender's voice sent after {comp.voice_sent_at:.1f} s"
                    if comp.voice_sent_at is not None
                    else ""
                )
                typer.echo(
                    f"{output}: {comp.sequence} packets of {packet_ms:g} ms, "
                    f"{comp.samples / m.sample_rate:.2f} s{sent}",
                    err=str(output) == "-",
                )
            return
        if str(input) == "-" or str(output) == "-":
            raise SpeechVQError("'-' (a pipe) needs --stream")
        wave, sr = load_audio(input, m.sample_rate)
        searching = search_config(m, search, search_rate)
        header = compress_file(
            m,
            wave,
            sr,
            output,
            entropy=entropy,
            speaker=speaker,
            pitch=pitch,
            adapt_steps=adapt,
            search=searching,
            force=force,
            progress=True,
        )
        track = f" (pitch track {header.pitch_bytes})" if header.pitch_block else ""
        typer.echo(f"{output}: {header.num_frames} codes, {header.payload_bytes} bytes{track}")
        if report:
            seconds = header.num_frames * header.hop_length / header.sample_rate
            code_bytes = header.payload_bytes - header.pitch_bytes
            per_code = code_bytes * 8 / header.num_frames
            nominal = m.config.nominal_bitrate
            typer.echo(
                f"  {header.bits_per_second:,.0f} bit/s: codes {8 * code_bytes / seconds:,.0f} "
                f"({per_code:.2f} bits/code, entropy model {header.entropy_model}; nominal "
                f"{nominal:,.0f} bit/s), pitch track {8 * header.pitch_bytes / seconds:,.0f}"
            )
            seconds = header.num_samples / header.sample_rate
            size = output.stat().st_size
            voice = f", of which {len(header.voice)} bytes of voice" if header.voice else ""
            typer.echo(f"  whole file {size} bytes = {8 * size / seconds:,.0f} bit/s{voice}")


@app.command()
def decompress(
    input: Path = typer.Argument(..., help=".svq file (from `speechvq compress`)."),
    output: Path = typer.Argument(..., help="Audio file to write (wav)."),
    model: str | None = ModelOpt,
    speaker: str | None = typer.Option(
        None, "--speaker", "-s", help="Voice to decode with (default: the file's)."
    ),
    speaker_wav: list[Path] | None = SpeakerWavOpt,
    match: bool = MatchCodesOpt,
    adapt: int = ReferenceAdaptOpt,
    temperature: float = TempOpt,
    seed: int | None = SeedOpt,
    stream: bool = typer.Option(
        False,
        "--stream",
        help="Read a .svqs packet stream and decode it as it arrives; INPUT '-' reads standard "
        "input, OUTPUT '-' writes raw 16-bit mono PCM at the model's rate to standard output.",
    ),
    force: bool = ForceOpt,
):
    """Decode an .svq file back to speech (the codes come back exactly)."""
    with errors():
        from speechvq.audio.io import save_audio
        from speechvq.inference.compression import decompress as decompress_file

        if str(output) != "-":
            check_output(output, force)
        m = load_model(model)
        voice = None  # the file's own
        if speaker is not None or speaker_wav:
            # an unknown name or a bad recording fails before the slow part
            voice, _ = pick_voice(m, speaker, speaker_wav, "--speaker", "--speaker-wav", adapt)
        if stream:
            from speechvq.cli.streaming import decompress_stream

            decomp, written = decompress_stream(m, input, output, voice, seed or 0, match)
            lost = (
                f", {decomp.lost_packets} lost packet(s) concealed" if decomp.lost_packets else ""
            )
            followed = (
                ", in the sender's voice from its voice packet" if decomp.voice_updates else ""
            )
            typer.echo(
                f"{output}: {written / m.sample_rate:.2f} s{lost}{followed}",
                err=str(output) == "-",
            )
            return
        if str(input) == "-" or str(output) == "-":
            raise SpeechVQError("'-' (a pipe) needs --stream")
        wave = decompress_file(
            m,
            input,
            speaker=voice,
            temperature=temperature,
            seed=seed,
            match=match,
        )
        save_audio(output, wave, m.sample_rate)
        typer.echo(f"{output}: {len(wave) / m.sample_rate:.2f} s")
