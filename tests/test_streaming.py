"""Streaming (issue 18): causal layers with state, the stream encoder and decoder, packets,
the command line."""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import speechvq
from speechvq.config import ModelConfig
from speechvq.errors import SpeechVQError
from speechvq.inference.streaming import packet_code
from speechvq.models.causal import CausalConv1d, streaming
from speechvq.models.causal_numba import conv_step_kernel

from .conftest import synth_speechlike


def _causal_model(preset: str = "tiny-sf"):
    cfg = ModelConfig.preset(preset, speakers=["a"])
    cfg = dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, causal=True))
    torch.manual_seed(0)
    return speechvq.SpeechVQ(cfg).eval()


MODEL = _causal_model()
WAVE = synth_speechlike(0.6, seed=3)  # 9600 samples: 150 frames


def _stream_model():
    from speechvq.codec.prefix import bigram_code_lengths

    torch.manual_seed(0)
    model = speechvq.SpeechVQ(ModelConfig.preset("tiny-stream", speakers=["a", "b"])).eval()
    with torch.no_grad():  # audible output: heads away from their near-silent start
        for head in (model.decoder.harmonic_head, model.decoder.noise_head):
            head.weight.normal_(0, 0.3)
            head.bias.fill_(-1.0)
    K = model.config.quantizer.codebook_size
    counts = np.zeros((K, K), dtype=np.int64)  # its packet code, from its own codes
    for seed in range(4):
        c = model.encode(synth_speechlike(0.5, seed=10 + seed), 16000)
        np.add.at(counts, (c[:-1], c[1:]), 1)
    model.set_packet_code(torch.from_numpy(bigram_code_lengths(counts)))
    return model


STREAM = _stream_model()
STREAM_CODE = packet_code(STREAM)
# Streamed audio differs from offline by float rounding only (the harmonic phase is
# summed in other pieces): under 2e-4 of the peak, -74 dB.
TOLERANCE = 2e-4
CODES = np.random.default_rng(0).integers(0, 16, 300)  # 1.2 s


# The streaming steps of the causal convs and the harmonic bank: torch's
# (`unrolled_conv1d`, `SourceFilterDecoder._harmonics`), or the compiled ones
# (`models.causal_numba`, `decoders.harmonics_numba`: what runs when numba is installed).
STEPS = [
    "torch",
    pytest.param(
        "compiled", marks=pytest.mark.skipif(conv_step_kernel() is None, reason="no numba")
    ),
]


@contextlib.contextmanager
def conv_step(name: str):
    """Streams started inside the block take the `name` steps."""
    import speechvq.models.causal as causal
    import speechvq.models.decoders.synthesis_stream as synthesis_stream

    saved = causal.conv_step_kernel, synthesis_stream.harmonic_kernel
    if name == "torch":
        causal.conv_step_kernel = synthesis_stream.harmonic_kernel = lambda: None
    try:
        yield
    finally:
        causal.conv_step_kernel, synthesis_stream.harmonic_kernel = saved


@pytest.mark.parametrize("step", STEPS)
@settings(max_examples=25, deadline=None)
@given(
    extra=st.integers(0, 3),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 4),
    batch=st.integers(1, 2),
    cuts=st.lists(st.integers(0, 40), min_size=1, max_size=12).filter(lambda c: sum(c) >= 3),
)
def test_a_causal_conv_streamed_in_any_pieces_equals_it_offline(
    step, extra, stride, dilation, batch, cuts
):
    torch.manual_seed(0)
    conv = CausalConv1d(2, 3, stride + extra, stride, dilation)
    x = torch.randn(batch, 2, sum(cuts) // stride * stride)
    whole = conv(x)
    assert whole.shape[-1] == x.shape[-1] // stride
    pieces, t = [], 0
    with conv_step(step), streaming(conv, batch_size=batch):
        assert (conv._stream.step is not None) == (step == "compiled")
        for n in cuts:
            pieces.append(conv(x[..., t : t + n]))
            t += n
    got = torch.cat(pieces, dim=-1)
    assert torch.allclose(got, whole, atol=1e-6)


@pytest.mark.parametrize("step", STEPS)
def test_each_causal_network_streamed_in_pieces_equals_it_offline(step):
    """The encoder, the frame network and the F0 predictor, each with every weight
    random (so the residual branches, which start at zero, count), streamed in uneven
    pieces: as compiled steps (`CompiledStream`) or layer by layer."""
    torch.manual_seed(0)
    model = speechvq.SpeechVQ(ModelConfig.preset("tiny-stream", speakers=["a"])).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    hop, frames = model.hop_length, 40
    nets = [
        (model.encoder, torch.randn(1, 1, frames * hop), hop),
        (model.decoder.net, torch.randn(1, model.decoder.net.inp.in_channels, frames), 1),
        (model.pitch, torch.randn(1, model.config.quantizer.dim, frames), 1),
    ]

    def joined(out):  # the F0 predictor's two contours as one [B, 2, F]
        return (
            torch.stack([out.norm_logf0, out.voicing_logit], 1)
            if hasattr(out, "norm_logf0")
            else out
        )

    for net, x, unit in nets:
        with torch.no_grad():
            whole = joined(net(x))
            pieces, t = [], 0
            with conv_step(step), streaming(net):
                assert (net._stream is not None) == (step == "compiled")
                for n in [1, 7, 2, 13, 0, 17]:
                    pieces.append(joined(net(x[..., t : t + n * unit])))
                    t += n * unit
        got = torch.cat(pieces, dim=-1)
        assert got.shape == whole.shape and whole.abs().max() > 0.1
        assert torch.allclose(got, whole, atol=1e-5 * whole.abs().max().item()), type(net).__name__


def test_a_causal_conv_reads_nothing_of_the_future():
    conv = CausalConv1d(1, 1, 4, stride=2)
    x = torch.randn(1, 1, 64)
    y = x.clone()
    y[..., 40:] = 0.0
    assert torch.equal(conv(x)[..., :20], conv(y)[..., :20])  # output i reads inputs <= 2i + 1


def _in_pieces(stream, data: np.ndarray, cuts: list[int]) -> np.ndarray:
    """Push `data` into a stream encoder or decoder cut at `cuts` (the rest last), then
    flush; everything it gave, joined."""
    out, t = [], 0
    for n in cuts:
        out.append(stream.push(data[t : t + n]))
        t += n
    out += [stream.push(data[t:]), stream.flush()]
    return np.concatenate(out)


@pytest.mark.parametrize("step", STEPS)
@settings(max_examples=20, deadline=None)
@given(cuts=st.lists(st.integers(1, 700), min_size=1, max_size=20))
def test_streamed_codes_equal_the_offline_codes_for_any_chunking(step, cuts):
    offline = MODEL.encode(WAVE, 16000)
    with conv_step(step):
        enc = MODEL.stream_encoder()
        assert (MODEL.encoder._stream is not None) == (step == "compiled")  # as one list
        codes = _in_pieces(enc, WAVE, cuts)
    assert np.array_equal(codes, offline)


def test_a_frame_is_coded_as_soon_as_its_samples_are_in():
    enc = MODEL.stream_encoder()
    assert enc.push(WAVE[:63]).size == 0
    assert enc.push(WAVE[63:64]).size == 1  # the 64th sample completes frame 0
    assert enc.push(WAVE[64 : 64 * 11 + 5]).size == 10
    assert enc.flush().size == 1  # the 5 samples left over, zero-padded
    with pytest.raises(SpeechVQError, match="flushed"):
        enc.push(WAVE[:64])


def test_the_causal_encoders_codes_do_not_depend_on_later_audio():
    later = WAVE.copy()
    later[6400:] = np.random.default_rng(0).standard_normal(later.size - 6400) * 0.1
    a, b = MODEL.encode(WAVE, 16000), MODEL.encode(later, 16000)
    assert np.array_equal(a[:100], b[:100]) and not np.array_equal(a, b)


def test_one_stream_at_a_time_and_a_non_causal_model_says_so():
    enc = MODEL.stream_encoder()
    with pytest.raises(SpeechVQError, match="already streaming"):
        MODEL.stream_encoder()
    enc.flush()
    MODEL.stream_encoder().close()  # free again
    plain = speechvq.SpeechVQ(ModelConfig.preset("tiny-sf", speakers=["a"]))
    with pytest.raises(SpeechVQError, match="not causal"):
        plain.stream_encoder()


def test_causal_models_chunk_long_inputs_exactly_and_old_configs_are_unchanged():
    long = synth_speechlike(3.0, seed=4)
    assert np.array_equal(MODEL.encode(long, 16000, chunk_seconds=0.5), MODEL.encode(long, 16000))
    assert "causal" in MODEL.config.to_dict()["encoder"]
    assert "causal" not in ModelConfig.preset("small").to_dict()["encoder"]
    assert ModelConfig.from_dict(MODEL.config.to_dict()) == MODEL.config


@pytest.mark.parametrize("step", STEPS)
@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(1, 60), min_size=1, max_size=12))
def test_streamed_audio_equals_the_offline_decode_for_any_chunking(step, cuts):
    offline = STREAM.decode(CODES, "b", seed=7)
    with conv_step(step):
        dec = STREAM.stream_decoder("b", seed=7)
        assert (dec.synthesis.kernel is not None) == (step == "compiled")
        assert (STREAM.decoder.net._stream is not None) == (step == "compiled")
        got = _in_pieces(dec, CODES, cuts)
    assert got.shape == offline.shape and np.abs(offline).max() > 0.05
    assert np.abs(got - offline).max() < TOLERANCE * np.abs(offline).max()


def test_the_stream_decoder_holds_back_three_frames():
    from speechvq.models.decoders.synthesis_stream import HOLD

    dec = STREAM.stream_decoder("a", seed=0)
    assert dec.push(CODES[:2]).size == 0
    assert dec.push(CODES[2:10]).size == (10 - HOLD) * 64
    assert dec.push(CODES[10:11]).size == 64
    assert dec.flush().size == HOLD * 64


def test_a_non_causal_decoder_says_it_cannot_stream():
    with pytest.raises(SpeechVQError, match="not a causal source-filter decoder"):
        MODEL.stream_decoder("a")


def test_encoder_and_decoder_stream_at_once_through_one_model():
    enc, dec = STREAM.stream_encoder(), STREAM.stream_decoder("a", seed=1)
    audio = [dec.push(enc.push(WAVE[t : t + 320])) for t in range(0, WAVE.size, 320)]
    audio += [dec.push(enc.flush()), dec.flush()]
    offline = STREAM.decode(STREAM.encode(WAVE, 16000), "a", seed=1)
    assert np.abs(np.concatenate(audio) - offline).max() < TOLERANCE * np.abs(offline).max()


def test_a_live_voice_changer_to_the_voice_of_a_reference_recording(tmp_path):
    """A causal speaker-encoder model streams in a voice measured from a recording, as
    `speechvq stream --target-wav` does, equal to the offline decode in that voice."""
    import soundfile as sf
    from typer.testing import CliRunner

    from speechvq.cli import app

    model = _spk_stream_model()
    reference = synth_speechlike(2.0, seed=7)
    voice = model.voice([(reference, 16000)], adapt_steps=0)
    codes = model.encode(WAVE, 16000)
    dec = model.stream_decoder(voice, seed=0)
    audio = np.concatenate([dec.push(codes[t : t + 7]) for t in range(0, codes.size, 7)])
    audio = np.concatenate([audio, dec.flush()])
    offline = model.decode(codes, voice, seed=0)
    assert np.abs(audio - offline).max() < TOLERANCE * np.abs(offline).max()
    other = model.decode(
        codes, model.voice([(synth_speechlike(2.0, seed=8) * 0.5, 16000)], adapt_steps=0), seed=0
    )
    assert not np.allclose(other, offline)  # the voice is the reference's, not a fixed one
    model.save(tmp_path / "spk.safetensors")
    sf.write(tmp_path / "in.wav", WAVE, 16000)
    sf.write(tmp_path / "ref.wav", reference, 16000)
    args = ["stream", str(tmp_path / "in.wav"), str(tmp_path / "out.wav")]
    args += ["-m", str(tmp_path / "spk.safetensors"), "--target-wav", str(tmp_path / "ref.wav")]
    args += ["--adapt", "0"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert sf.info(tmp_path / "out.wav").frames == WAVE.size
    # The same through the pipe's two ends: `decompress --stream --speaker-wav`.
    m = ["-m", str(tmp_path / "spk.safetensors")]
    svqs, out = str(tmp_path / "in.svqs"), str(tmp_path / "live.wav")
    r = CliRunner().invoke(app, ["compress", "--stream", str(tmp_path / "in.wav"), svqs, *m])
    assert r.exit_code == 0, r.output
    args = ["decompress", "--stream", svqs, out, "--speaker-wav", str(tmp_path / "ref.wav")]
    args += ["--adapt", "0"]
    r = CliRunner().invoke(app, [*args, *m])
    assert r.exit_code == 0, r.output
    from speechvq.audio.io import load_audio

    live = load_audio(out, 16000)[0]
    codes = model.encode(load_audio(tmp_path / "in.wav", 16000)[0], 16000)
    offline = model.decode(
        codes, model.voice([load_audio(tmp_path / "ref.wav", 16000)], adapt_steps=0), seed=0
    )
    assert live.size == WAVE.size  # written clipped to 16 bits (this random model is loud)
    assert np.abs(live - np.clip(offline, -1, 1)).max() < 1e-3 + TOLERANCE * np.abs(offline).max()
    args = ["decompress", "--stream", svqs, out, "-f", "-s", "a", "--speaker-wav", "x.wav"]
    r = CliRunner().invoke(app, [*args, *m])
    assert r.exit_code == 2 and "either" in r.output
    # The sender can put a voice in the stream's header instead: no reference at the receiver.
    ref = ["--speaker-wav", str(tmp_path / "ref.wav"), "--adapt", "0"]
    args = ["compress", "--stream", str(tmp_path / "in.wav"), svqs, "-f", *ref, *m]
    assert CliRunner().invoke(app, args).exit_code == 0
    r = CliRunner().invoke(app, ["decompress", "--stream", svqs, out, "-f", *m])
    assert r.exit_code == 0, r.output
    from speechvq.inference.compression import pack_voice, unpack_voice

    sent = unpack_voice(
        pack_voice(model.voice([load_audio(tmp_path / "ref.wav", 16000)], adapt_steps=0))
    )
    offline = np.clip(model.decode(codes, sent, seed=0), -1, 1)  # the voice as the header has it
    np.testing.assert_allclose(load_audio(out, 16000)[0], offline, atol=2e-3)
    args = ["compress", str(tmp_path / "in.wav"), str(tmp_path / "x.svq"), *ref, *m]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "needs --stream" in r.output


@settings(max_examples=10, deadline=None)
@given(cuts=st.lists(st.integers(1, 80), min_size=1, max_size=8))
def test_a_live_voice_changer_moves_the_codes_as_they_arrive(cuts):
    """To a voice from recordings the stream decoder matches each frame's codebook row
    to the statistics of the rows so far (`RunningMatch`), however the codes are cut;
    `match=False` decodes the codes as they come."""
    from speechvq.models.matching import RunningMatch

    model = _spk_stream_model()
    voice = model.voice([(synth_speechlike(2.0, seed=7), 16000)], adapt_steps=0)
    moved = model.quantize(RunningMatch(voice.codes).push(model.code_rows(CODES)))
    assert np.array_equal(moved[:249], CODES[:249]) and not np.array_equal(moved, CODES)
    offline = model.decode(moved, voice, seed=0)
    got = _in_pieces(model.stream_decoder(voice, seed=0), CODES, cuts)
    assert np.abs(got - offline).max() < TOLERANCE * np.abs(offline).max()
    plain = _in_pieces(model.stream_decoder(voice, seed=0, match=False), CODES, cuts)
    unmoved = model.decode(CODES, voice, seed=0)
    assert np.abs(plain - unmoved).max() < TOLERANCE * np.abs(unmoved).max()
    assert np.abs(unmoved - offline).max() > 0.05 * np.abs(offline).max()


def _spk_stream_model():
    torch.manual_seed(0)
    model = speechvq.SpeechVQ(ModelConfig.preset("tiny-stream-spk", speakers=["a"])).eval()
    with torch.no_grad():
        for head in (model.decoder.harmonic_head, model.decoder.noise_head):
            head.weight.normal_(0, 0.3)
            head.bias.fill_(-1.0)
    return model


def test_the_latency_follows_from_the_config_and_info_reports_it():
    from speechvq.inference.summary import describe_model
    from speechvq.models.streaming import algorithmic_latency

    assert algorithmic_latency(STREAM) == pytest.approx(0.016)  # 4 ms frame + 3 held back
    assert algorithmic_latency(MODEL) is None  # its decoder is not causal
    rows = dict(describe_model(STREAM))
    assert rows["streaming"].startswith("yes: algorithmic latency 16 ms")
    assert rows["packet code"] == "bigram table"
    plain = dict(describe_model(_causal_stream_model_without_code()))
    assert plain["packet code"].startswith("fixed: 4 bits a code")  # K = 16
    assert dict(describe_model(MODEL))["streaming"].startswith("no")


def test_a_causal_model_starts_from_a_non_causal_ones_weights():
    from speechvq.training.init import copy_matching

    offline = speechvq.SpeechVQ(ModelConfig.preset("tiny-sf", speakers=["a", "b"]))
    assert copy_matching(offline, STREAM.__class__(STREAM.config)) == []  # every tensor copied


# ---- packets, the stream compressor and decompressor ---------------------------------


def _stream_bytes(model, wave, packet_ms=20.0, chunk=333, code="auto"):
    from speechvq.inference.streaming import StreamCompressor

    comp = StreamCompressor(model, 16000, packet_ms=packet_ms, entropy=code)
    data = [comp.start()]
    for t in range(0, wave.size, chunk):
        data.append(comp.push(wave[t : t + chunk]))
    data.append(comp.flush())
    return comp.header, b"".join(data)


def _read_all(model, data, header=None, voice="a"):
    import io

    from speechvq.codec import packets as P
    from speechvq.inference.streaming import StreamDecompressor

    f = io.BytesIO(data)
    header = P.read_header(f)
    decomp = StreamDecompressor(model, header, voice=voice, seed=0)
    events = list(decomp.reader(f).events())
    audio = np.concatenate([decomp.feed(e) for e in events])
    return audio[: decomp.num_samples], events, decomp


@pytest.mark.parametrize("code", ["bigram", "fixed"])
def test_packets_carry_exactly_the_codes_and_the_decode_equals_offline(code):
    from speechvq.codec import packets as P

    header, data = _stream_bytes(STREAM, WAVE, code=code)
    assert header.entropy_model == code
    audio, events, _ = _read_all(STREAM, data)
    codes = np.concatenate([e.codes for e in events if isinstance(e, P.Packet)])
    assert np.array_equal(codes, STREAM.encode(WAVE, 16000))
    assert [len(e.codes) for e in events[:-1]] == [5] * 30 and isinstance(events[-1], P.End)
    offline = STREAM.decode(codes, "a", seed=0)[: WAVE.size]
    assert audio.size == WAVE.size
    assert np.abs(audio - offline).max() < TOLERANCE * np.abs(offline).max()


def test_packet_framing_is_one_byte_and_the_bigram_code_beats_fixed_bits():
    from speechvq.codec import packets as P

    header, fixed = _stream_bytes(STREAM, WAVE, code="fixed")
    head = len(P.header_bytes(header))
    bits = STREAM.config.quantizer.codebook_size.bit_length() - 1  # K = 2^bits
    assert len(fixed) == head + 30 * (1 + -(-5 * bits // 8)) + 7  # 30 packets, end packet
    header, bigram = _stream_bytes(STREAM, WAVE)
    assert header.entropy_model == "bigram"  # "auto": the model's table
    assert len(bigram) - len(P.header_bytes(header)) < len(fixed) - head


def test_the_last_packet_may_be_short():
    from speechvq.codec import packets as P

    _, data = _stream_bytes(STREAM, WAVE[: 3200 + 64 * 2])  # 52 frames: 10 of 5, then 2
    audio, events, _ = _read_all(STREAM, data)
    assert [len(e.codes) for e in events[:-1]] == [5] * 10 + [2]
    assert isinstance(events[-1], P.End) and events[-1].num_samples == audio.size == 3328


def test_a_stream_needs_a_packet_code_the_model_has():
    from speechvq.inference.streaming import StreamCompressor

    with pytest.raises(SpeechVQError, match="not 'prior'"):
        StreamCompressor(STREAM, 16000, entropy="prior")
    plain = _causal_stream_model_without_code()
    with pytest.raises(SpeechVQError, match="no packet code table"):
        StreamCompressor(plain, 16000, entropy="bigram")
    assert StreamCompressor(plain, 16000).header.entropy_model == "fixed"


def _causal_stream_model_without_code():
    model = _stream_model()
    model.set_packet_code(None)
    return model


def test_a_lost_packet_is_concealed_and_the_stream_goes_on():
    import io

    from speechvq.codec import packets as P

    header, data = _stream_bytes(STREAM, WAVE)
    f = io.BytesIO(data)
    reader = P.PacketReader(f, P.read_header(f), STREAM_CODE, "test")
    start = f.tell()
    spans = []  # (offset, length) of each packet
    for _ in reader.events():
        spans.append((start, f.tell() - start))
        start = f.tell()
    pos, length = spans[7]
    damaged = data[:pos] + data[pos + length :]  # packet 7 never arrives
    audio, events, decomp = _read_all(STREAM, damaged)
    assert any(isinstance(e, P.Lost) and e.packets == 1 for e in events)
    assert decomp.lost_packets == 1 and audio.size == WAVE.size and np.isfinite(audio).all()
    assert start > 0


def test_a_stream_from_another_model_or_not_a_stream_is_refused():
    import io

    from speechvq.codec import packets as P
    from speechvq.inference.streaming import StreamDecompressor

    header, data = _stream_bytes(STREAM, WAVE[:3200])
    other = _stream_model()
    with torch.no_grad():
        other.decoder.noise_head.bias.fill_(0.5)
    with pytest.raises(SpeechVQError, match="made by model"):
        StreamDecompressor(other, P.read_header(io.BytesIO(data)))
    with pytest.raises(SpeechVQError, match="not a speechvq packet stream"):
        P.read_header(io.BytesIO(b"RIFF....WAVEfmt "))
    for old in (1, 2):  # 1: 3-byte framing, range-coded words; 2: no voice packet
        with pytest.raises(SpeechVQError, match=f"stream version {old}; this speechvq reads 3"):
            P.read_header(io.BytesIO(data[:4] + bytes([old]) + data[5:]))
    f = io.BytesIO(data[: len(data) - 3])  # cut off inside the end packet
    reader = StreamDecompressor(STREAM, P.read_header(f)).reader(f, "cut.svqs")
    with pytest.raises(SpeechVQError, match="cut.svqs: the stream ends inside its end packet"):
        list(reader.events())


def test_the_loopback_equals_offline_and_reports_latency_and_compute():
    from speechvq.inference.streaming import loopback

    r = loopback(STREAM, WAVE, 16000, chunk_ms=20, packet_ms=40, voice="b")
    offline = STREAM.decode(STREAM.encode(WAVE, 16000), "b", seed=0)[: WAVE.size]
    assert np.abs(r.audio - offline).max() < TOLERANCE * np.abs(offline).max()
    assert r.packet_ms == 40 and r.latency_ms == pytest.approx(16 + 20 + 40)
    assert len(r.compute_ms) == 30 and r.bitrate > r.packet_bitrate > 0
    assert r.packet_bitrate == pytest.approx(8 * (r.bytes_sent - r.header_bytes) / 0.6)


# ---- the command line ----------------------------------------------------------------


@pytest.fixture(scope="module")
def stream_model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "tiny-stream.safetensors"
    STREAM.save(path)
    return path


def test_the_loopback_command_prints_latency_compute_and_bitrate(tmp_path, stream_model_file):
    import soundfile as sf
    from typer.testing import CliRunner

    from speechvq.cli import app

    sf.write(tmp_path / "in.wav", WAVE, 16000)
    args = ["stream", str(tmp_path / "in.wav"), str(tmp_path / "out.wav")]
    r = CliRunner().invoke(app, [*args, "-m", str(stream_model_file), "--packet-ms", "40"])
    assert r.exit_code == 0, r.output
    assert "latency 76 ms = 16 ms algorithmic + 20 ms chunk + 40 ms packet" in r.output
    assert "compute per 20 ms chunk: mean" in r.output and "bit/s on the wire" in r.output
    assert ("without numba" in r.output) == (conv_step_kernel() is None)  # a hint if slow
    assert sf.info(tmp_path / "out.wav").frames == WAVE.size
    r = CliRunner().invoke(app, [*args, "-f"])  # the shipped model is not causal
    assert r.exit_code == 2 and "cannot stream" in r.output


def test_a_pipe_needs_stream(tmp_path):
    from typer.testing import CliRunner

    from speechvq.cli import app

    r = CliRunner().invoke(app, ["compress", "-", str(tmp_path / "x.svq")])
    assert r.exit_code == 2 and "needs --stream" in r.output


@pytest.mark.slow
def test_compress_and_decompress_stream_through_a_unix_pipe(tmp_path, stream_model_file):
    """raw PCM | speechvq compress --stream - - | speechvq decompress --stream - - > raw PCM"""
    import subprocess
    import sys

    pcm = (np.clip(WAVE, -1, 1) * 32767).astype("<i2").tobytes()
    exe = [sys.executable, "-m", "speechvq.cli"]
    model = ["-m", str(stream_model_file)]
    enc = subprocess.Popen(
        [*exe, "compress", "--stream", "-", "-", *model],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    dec = subprocess.Popen(
        [*exe, "decompress", "--stream", "-", "-", *model],
        stdin=enc.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    enc.stdout.close()
    enc.stdin.write(pcm)
    enc.stdin.close()
    out, err = dec.communicate(timeout=120)
    assert enc.wait(timeout=60) == 0 and dec.returncode == 0, err
    got = np.frombuffer(out, dtype="<i2").astype(np.float32) / 32768
    offline = STREAM.decode(STREAM.encode(WAVE, 16000), "a", seed=0)[: WAVE.size]
    assert got.size == WAVE.size
    assert np.abs(got - np.clip(offline, -1, 1)).max() < 2e-4 + TOLERANCE * np.abs(offline).max()


def test_a_voice_packet_uses_no_sequence_number_and_losing_it_is_no_gap():
    import io

    from speechvq.codec import packets as P

    header = P.StreamHeader("h", 16000, 64, 16, 5, "fixed")
    code = STREAM_CODE.fixed(16)
    five = np.arange(5)
    stream = (
        P.header_bytes(header)
        + P.packet_bytes(0, five, code, 5)
        + P.voice_packet_bytes(1, b"voice")
        + P.packet_bytes(1, five, code, 5)
        + P.end_bytes(2, 640)
    )
    f = io.BytesIO(stream)
    events = list(P.PacketReader(f, P.read_header(f), code, "test").events())
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Packet", "VoiceUpdate", "Packet", "End"]
    assert events[1].data == b"voice" and events[3].num_samples == 640
    lost = stream.replace(P.voice_packet_bytes(1, b"voice"), b"")  # dropped on the way
    f = io.BytesIO(lost)
    kinds = [type(e).__name__ for e in P.PacketReader(f, P.read_header(f), code, "t").events()]
    assert kinds == ["Packet", "Packet", "End"]  # no Lost: the receiver keeps its voice
    with pytest.raises(ValueError, match="1 to 255 bytes"):
        P.voice_packet_bytes(0, b"")


def test_the_sender_measures_its_voice_and_the_receiver_follows_it():
    import io

    from speechvq.codec import packets as P
    from speechvq.inference.streaming import StreamCompressor, StreamDecompressor

    model = speechvq.load("small-stream-spk")
    wave = synth_speechlike(2.0, seed=5)
    with pytest.raises(SpeechVQError, match="no speaker encoder"):
        StreamCompressor(STREAM, 16000, send_voice=1.0)
    comp = StreamCompressor(model, 16000, send_voice=1.0, threaded=False)
    data = comp.start() + b"".join(comp.push(wave[t : t + 320]) for t in range(0, wave.size, 320))
    data += comp.flush()
    assert comp.voice_sent_at == 1.0  # measured on exactly the first second, then sent
    measured = model.voice([(wave[:16000], 16000)], adapt_steps=0)  # live voices are not tuned
    assert np.allclose(comp.sent_voice.vector, measured.vector)

    late = StreamCompressor(model, 16000, send_voice=1.0, threaded=False)  # silence first
    later = np.concatenate([np.zeros(16000, np.float32), wave])
    for t in range(0, later.size, 320):
        late.push(later[t : t + 320])
    late.flush()
    assert late.voice_sent_at == 2.0  # silent at 1 s: measured again a second on
    live = StreamCompressor(model, 16000, send_voice=1.0)  # in a thread beside the stream
    live_data = live.start()
    for t in range(0, wave.size, 320):
        live_data += live.push(wave[t : t + 320])
    live_data += live.flush()  # waits for the measurement if it is still going
    assert 1.0 <= live.voice_sent_at <= 2.0
    assert np.allclose(live.sent_voice.vector, measured.vector)  # on the same first second

    def codes(stream: bytes) -> np.ndarray:
        f = io.BytesIO(stream)
        events = StreamDecompressor(model, P.read_header(f)).reader(f).events()
        return np.concatenate([e.codes for e in events if isinstance(e, P.Packet)])

    plain = StreamCompressor(model, 16000)
    plain_data = plain.start() + b"".join(
        plain.push(wave[t : t + 320]) for t in range(0, wave.size, 320)
    )
    plain_data += plain.flush()
    # measuring the voice leaves the stream's codes alone, in place or in a thread
    np.testing.assert_array_equal(codes(data), codes(plain_data))
    np.testing.assert_array_equal(codes(live_data), codes(plain_data))

    def decode(voice):
        f = io.BytesIO(data)
        decomp = StreamDecompressor(model, P.read_header(f), voice=voice, seed=0)
        audio = np.concatenate([decomp.feed(e) for e in decomp.reader(f).events()])
        return decomp, audio

    follows, a = decode(None)  # no voice given: the stream's, then the sender's
    fixed, b = decode(model.speakers[0])  # a voice given: voice packets are ignored
    assert follows.voice_updates == 1 and fixed.voice_updates == 0
    assert follows.decoder.mean.item() == pytest.approx(measured.logf0_mean, abs=1e-2)
    switch = 16000 - 320 - 3 * 64  # before the last push of the second, less 3 frames held back
    peak = np.abs(b).max()
    diff = np.abs(a - b) > 1e-4 * peak
    assert not diff[:switch].any() and diff[switch : switch + 640].any()  # from the packet on
    assert np.abs(a[switch + 3200 :] - b[switch + 3200 :]).max() > 0.05 * peak  # then not


def test_compress_stream_sends_the_senders_voice_by_default_with_a_speaker_model(tmp_path):
    from typer.testing import CliRunner

    from speechvq.audio.io import save_audio
    from speechvq.cli import app

    src = tmp_path / "in.wav"
    save_audio(src, synth_speechlike(2.0, seed=6), 16000)
    run = CliRunner().invoke
    r = run(
        app, ["compress", "--stream", str(src), str(tmp_path / "s.svqs"), "-m", "small-stream-spk"]
    )
    assert r.exit_code == 0, r.output
    assert "the sender's voice sent after 1.5 s" in r.output  # by default, after 1.5 s
    args = ["compress", "--stream", str(src), str(tmp_path / "v.svqs"), "-m", "small-stream-spk"]
    r = run(app, [*args, "--send-voice", "1"])
    assert r.exit_code == 0 and "the sender's voice sent after 1.0 s" in r.output, r.output
    r = run(app, ["decompress", "--stream", str(tmp_path / "v.svqs"), str(tmp_path / "v.wav"),
                  "-m", "small-stream-spk"])  # fmt: skip
    assert r.exit_code == 0 and "in the sender's voice" in r.output, r.output
    r = run(app, ["compress", str(src), str(tmp_path / "f.svq"), "--send-voice", "1"])
    assert r.exit_code != 0 and "--send-voice needs --stream" in r.output
    r = run(app, [*args, "--send-voice", "1", "-m", "small-stream", "--force"])
    assert r.exit_code != 0 and "no speaker encoder" in r.output


def test_encoding_with_the_streaming_encoder_is_refused():
    enc = STREAM.stream_encoder()
    with pytest.raises(SpeechVQError, match="encoder is streaming"):
        STREAM.encode(synth_speechlike(0.5), 16000)  # it would move the stream's state
    enc.flush()
    assert STREAM.encode(synth_speechlike(0.5), 16000).size == 125
