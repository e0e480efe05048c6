"""Speech <-> `.svq`: entropy-code a model's codes into the container, and back.

`compress` encodes a `[T]` waveform with a model and writes its codes,
range-coded (`speechvq.codec.entropy`) under the model's prior when it has one, as
an `.svq` file (`speechvq.codec.bitstream`); `decompress` reads one back and
decodes it with the model that wrote it (checked by `model_hash_of`). The
lower level, with no model, is `pack_codes` / `unpack_codes`: codes and an
entropy model to an `SVQFile` and back, with the codes' CRC32 catching an
entropy model that disagrees with the writer's. `model` is a
`speechvq.SpeechVQ`, duck-typed here, so this module needs no torch.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from speechvq.codec import pitch_track
from speechvq.codec.bitstream import (
    MODEL_HASH_CHARS,
    SVQFile,
    SVQHeader,
    codes_crc32,
    read_svq,
    write_svq,
)
from speechvq.codec.entropy import CODER_NAME, ProbabilitySource, decode_codes, encode_codes
from speechvq.config import COMPRESS_ADAPT_STEPS
from speechvq.errors import SpeechVQError
from speechvq.inference.code_search import SearchConfig
from speechvq.models.modelfile import model_hash
from speechvq.models.voice import Voice
from speechvq.version import __version__


def pack_codes(
    codes: np.ndarray,
    source: ProbabilitySource,
    *,
    model_hash: str,
    sample_rate: int,
    hop_length: int,
    num_samples: int | None = None,
    speaker: str | None = None,
    package_version: str = "",
) -> SVQFile:
    """Entropy-code `[T]` codes under `source` into an `SVQFile` ready for `write_svq`."""
    codes = np.asarray(codes, dtype=np.int64).reshape(-1)
    K = source.num_symbols
    if K > 1 << 16:
        raise ValueError(f"codebook of {K} codes: the format holds at most 65536")
    payload = encode_codes(codes, source)
    header = SVQHeader(
        model_hash=model_hash[:MODEL_HASH_CHARS],
        sample_rate=int(sample_rate),
        hop_length=int(hop_length),
        codebook_size=K,
        num_frames=codes.size,
        num_samples=int(codes.size * hop_length if num_samples is None else num_samples),
        speaker=speaker,
        entropy_model=source.name,
        codes_crc32=codes_crc32(codes),
        payload_bytes=len(payload),
        payload_crc32=zlib.crc32(payload),
        package_version=package_version,
    )
    return SVQFile(header, payload)


def unpack_codes(svq: SVQFile, source: ProbabilitySource) -> np.ndarray:
    """Decode the `[T]` int64 codes of a read file; `source` must match `header.entropy_model`."""
    h = svq.header
    name = svq.path or "<svq>"
    if source.name != h.entropy_model or source.num_symbols != h.codebook_size:
        raise SpeechVQError(
            f"{name}: coded with entropy model {h.entropy_model!r} over {h.codebook_size} codes,"
            f" not {source.name!r} over {source.num_symbols}"
        )
    if h.coder != CODER_NAME:
        raise SpeechVQError(
            f"{name}: unknown entropy coder {h.coder!r} (this speechvq: {CODER_NAME})"
        )
    try:
        codes = decode_codes(svq.payload, h.num_frames, source)
    except ValueError as exc:
        raise SpeechVQError(f"{name}: cannot decode codes ({exc})") from None
    if codes_crc32(codes) != h.codes_crc32:
        raise SpeechVQError(
            f"{name}: decoded codes fail their checksum; the {h.entropy_model!r} model gave"
            " different probabilities than when the file was written (another machine,"
            " torch version or thread count?)"
        )
    return codes


# With a model -----------------------------------------------------------------
# `model` is a `speechvq.SpeechVQ` (duck-typed here, so this module needs no torch).


def model_hash_of(model: Any) -> str:
    """`model_hash` of a model's state dict and config: the same for a model and its saved file."""
    return model_hash(model.state_dict(), model.config.to_dict())


ENTROPY_MODELS = ("auto", "prior", "adaptive", "uniform")


def entropy_source(model: Any, name: str = "auto", speaker: str | None = None) -> ProbabilitySource:
    """The entropy model a writer codes `model`'s codes with: the one place that chooses.

    `name` is one of `ENTROPY_MODELS`: "auto" is the model's prior when it has
    one, else "adaptive". The prior is conditioned on `speaker` (a name of the
    model; None is the prior's "unknown speaker" row). A reader does not
    choose: `decompress` rebuilds the model that the file's header names.
    """
    from speechvq.codec.entropy import make_source

    if name not in ENTROPY_MODELS:
        raise SpeechVQError(f"unknown entropy model {name!r} (one of: {', '.join(ENTROPY_MODELS)})")
    if name == "prior" or (name == "auto" and model.prior is not None):
        return PriorSource.for_model(model, speaker)
    return make_source("adaptive" if name == "auto" else name, model.config.quantizer.codebook_size)


def compress(
    model: Any,
    wave: np.ndarray,
    sample_rate: int,
    path: str | os.PathLike,
    *,
    entropy: str = "auto",
    speaker: str | None = None,
    pitch: bool = True,
    adapt_steps: int = COMPRESS_ADAPT_STEPS,
    search: SearchConfig | None = None,
    force: bool = False,
    progress: bool = False,
) -> SVQHeader:
    """Encode a `[T]` waveform to codes and write them, entropy-coded, as an `.svq` file.

    `entropy` picks the entropy model (`entropy_source`; by default the
    model's prior, conditioned on `speaker`, when it has one). `speaker` is
    stored as the default voice for decompression. With `pitch` (and a model
    with the pitch path) the input's own F0 goes in the file as a pitch track
    (`codec.pitch_track`, about 150 bit/s), which the decoder then follows
    instead of predicting F0 from the codes. With a speaker encoder and no
    `speaker`, the input's own voice goes in the header, its vector tuned on the
    input `adapt_steps` steps (`models.voice.adapt_voice`; `progress` shows a bar).
    With `search`, the codes are searched by synthesis (`code_search.search_codes`)
    for the voice and F0 that `decompress` will decode them with; the file is
    the same format, and decodes as any other.
    """
    path = Path(path)
    if path.exists() and not force:  # before the encoder runs
        raise SpeechVQError(f"{path}: already exists (use --force to overwrite)")
    if speaker is not None:
        model.speaker_id(speaker)  # an unknown speaker fails here, naming the known ones
    source = entropy_source(model, entropy, speaker)
    sent = sender_codes(
        model,
        wave,
        sample_rate,
        speaker=speaker,
        pitch=pitch,
        adapt_steps=adapt_steps,
        search=search,
        progress=progress,
        label=str(path),
    )
    codes, voice, symbols = sent.codes, sent.voice, sent.pitch_symbols
    num_samples = round(np.asarray(wave).size * model.sample_rate / sample_rate)
    svq = pack_codes(
        codes,
        source,
        model_hash=model_hash_of(model),
        sample_rate=model.sample_rate,
        hop_length=model.hop_length,
        num_samples=min(num_samples, codes.size * model.hop_length),
        speaker=speaker,
        package_version=__version__,
    )
    header = dataclasses.replace(svq.header, voice=voice)
    payload = svq.payload
    if symbols is not None:
        track = pitch_track.encode_track(symbols)
        header = dataclasses.replace(header, pitch_block=pitch_block(model), pitch_bytes=len(track))
        payload += track
    header = dataclasses.replace(
        header, payload_bytes=len(payload), payload_crc32=zlib.crc32(payload)
    )
    write_svq(path, header, payload, force=force)
    return header


@dataclasses.dataclass(frozen=True)
class SentCodes:
    """What `compress` sends for a recording, before entropy coding."""

    codes: np.ndarray  # [F] the encoder's, or searched by synthesis
    voice: str | None  # the header's voice (`pack_voice`), with a speaker encoder
    pitch_symbols: np.ndarray | None  # the pitch track's symbols, with the pitch path


def sender_codes(
    model: Any,
    wave: np.ndarray,
    sample_rate: int,
    *,
    speaker: str | None = None,
    pitch: bool = True,
    adapt_steps: int = COMPRESS_ADAPT_STEPS,
    search: SearchConfig | None = None,
    progress: bool = False,
    label: str = "<input>",
) -> SentCodes:
    """The codes, voice and pitch track that `compress` writes for a `[T]` waveform (see
    there); also what a prior is trained on to fit them (`train-prior`'s `search_steps`).
    `label` names the input in the warning when no voice could be taken from it."""
    latents = model.latents(wave, sample_rate)  # [D, F]: kept for the search
    codes = model.quantize(latents)
    # The input's F0, tracked once for both the pitch track and the voice's level.
    track_f0 = (
        model.input_f0(wave, sample_rate, codes.size) if pitch and model.pitch is not None else None
    )
    voice = None
    if model.speaker_encoder is not None and speaker is None:
        f0 = None if track_f0 is None else [track_f0]
        try:  # the input's own voice travels with its codes
            voice = pack_voice(header_voice(model, wave, sample_rate, f0, adapt_steps, progress))
        except SpeechVQError as exc:
            warnings.warn(
                f"{label}: no voice stored ({exc}); decoded as a training voice", stacklevel=3
            )
    symbols = None if track_f0 is None else pitch_symbols(model, track_f0)
    if search is not None and search.steps > 0:
        codes = _searched_codes(
            model, wave, sample_rate, latents, voice, speaker, symbols, search, progress
        )
    return SentCodes(codes, voice, symbols)


def _searched_codes(model, wave, sample_rate, latents, voice, speaker, symbols, search, progress):
    """`compress`'s codes searched by synthesis in the voice and F0 that `decompress`
    will use: the header's voice after its 8-bit packing (else the stored speaker, else
    the first), the pitch track's F0 from its `symbols` (else predicted)."""
    from speechvq.inference.code_search import search_codes

    if voice is not None:
        target: str | Voice = unpack_voice(voice)
    else:
        target = speaker or model.speakers[0]
    frames = latents.shape[1]
    f0 = None if symbols is None else pitch_track_f0(model, symbols, frames)
    row = None if speaker is None else model.speaker_id(speaker)
    result = search_codes(
        model,
        wave,
        sample_rate,
        target,
        f0,
        search,
        latents=latents,
        prior_speaker=row,
        progress=progress,
    )
    return result.codes


def header_voice(
    model: Any,
    wave: np.ndarray,
    sample_rate: int,
    f0: list[np.ndarray] | None = None,
    adapt_steps: int = COMPRESS_ADAPT_STEPS,
    progress: bool = False,
) -> Voice:
    """The input's own voice as `compress` measures it for the header (before its 8-bit
    packing, `pack_voice`); `f0` `[input_f0]` if tracked already. Raises
    `SpeechVQError` where the input is too short or quiet to measure one."""
    return model.voice(
        [(wave, sample_rate)], latents=False, f0=f0, adapt_steps=adapt_steps, progress=progress
    )


def pitch_block(model: Any) -> int:
    """Code frames per block of `model`'s pitch track (20 ms)."""
    return pitch_track.block_frames(model.sample_rate / model.hop_length)


def pitch_symbols(model: Any, f0: np.ndarray) -> np.ndarray:
    """The pitch track symbols `[ceil(F / block)]` of an input's F0 per code frame `[F]`
    (`SpeechVQ.input_f0`)."""
    return pitch_track.to_symbols(f0, pitch_block(model))


def pitch_track_f0(
    model: Any, symbols: np.ndarray, num_frames: int, voice: str | int | Voice | None = None
) -> np.ndarray:
    """Frame F0 `[num_frames]` of a pitch track, as the input's own pitch, or moved to
    `voice`'s register (its log-F0 level) when another voice is asked for."""
    f0 = pitch_track.to_f0(symbols, num_frames, pitch_block(model))
    if voice is not None:
        f0 = pitch_track.move_level(f0, *model.voice_level(voice))
    return f0


def decompress(
    model: Any,
    path: str | os.PathLike,
    *,
    speaker: str | Voice | None = None,
    temperature: float = 1.0,
    seed: int | None = None,
    match: bool = True,
    pitch: bool = True,
) -> np.ndarray:
    """Decode an `.svq` file to a float32 `[num_samples]` waveform at `model.sample_rate`.

    The file must come from this very model (its hash). The entropy model is
    the one the header names, with the writer's conditioning (the stored
    speaker). The voice is `speaker` (a name, or a `Voice` from recordings),
    else the one stored in the file (the input's own, with a speaker
    encoder, or a speaker's name), else the model's first speaker. To a
    `speaker` voice measured from recordings, the codes are first moved
    towards it (`SpeechVQ.match_codes`) unless not `match`. A file's pitch
    track gives F0 (the input's own, or moved to `speaker`'s register), unless
    not `pitch`: then F0 is predicted from the codes, as without a track.
    """
    svq = read_svq(path, expected_model_hash=model_hash_of(model))
    h = svq.header
    if h.entropy_model == "prior" and model.prior is None:
        raise SpeechVQError(f"{path}: coded with the 'prior' entropy model, which this model lacks")
    try:
        source = entropy_source(model, h.entropy_model, h.speaker)
    except SpeechVQError:
        raise SpeechVQError(
            f"{path}: coded with the {h.entropy_model!r} entropy model, which this speechvq lacks"
        ) from None
    track = svq.payload[len(svq.payload) - h.pitch_bytes :] if h.pitch_block else b""
    codes = unpack_codes(
        dataclasses.replace(svq, payload=svq.payload[: len(svq.payload) - len(track)]), source
    )
    if codes.size == 0:
        return np.zeros(0, dtype=np.float32)
    if speaker is not None or h.voice is None:
        voice = speaker if speaker is not None else h.speaker or model.speakers[0]
    else:
        voice = unpack_voice(h.voice, path)
        if voice.vector.size != model.config.decoder.speaker_dim:
            raise SpeechVQError(f"{path}: its voice does not fit this model's speaker encoder")
    if match:  # only a voice from recordings moves them (a header's keeps no statistics)
        codes = model.match_codes(codes, voice)
    f0 = None
    if pitch and h.pitch_block and model.pitch is not None:
        if h.pitch_block != pitch_block(model):
            raise SpeechVQError(f"{path}: its pitch track's blocks do not fit this model")
        try:
            symbols = pitch_track.decode_track(track, -(-codes.size // h.pitch_block))
        except ValueError as exc:
            raise SpeechVQError(f"{path}: cannot decode its pitch track ({exc})") from None
        f0 = pitch_track_f0(model, symbols, codes.size, speaker)
    wave = model.decode(codes, voice, temperature=temperature, seed=seed, f0=f0)
    return wave[: h.num_samples]


class PriorSource:
    """The prior as an `entropy.ProbabilitySource`: one incremental WaveNet step per code.

    Encoder and decoder must compute bit-identical probabilities, so both use
    the same path: `WaveNet.step` in float32 under `torch.inference_mode`, on
    the CPU, with one thread (set for each step and restored after, so the
    process's thread count cannot change a result), and
    `entropy.softmax_probabilities` on the logits. Files then decode on any
    machine with the same CPU kind and torch build (see docs/prior.md).
    """

    name = "prior"

    def __init__(self, prior: Any, speaker: int | None = None):
        from speechvq.models.prior import speaker_index

        self.prior = prior
        self.num_symbols = prior.config.codebook_size
        self.speaker = speaker_index(prior, speaker)
        self._state: Any = None  # the prior's `WaveNetState` while coding

    @classmethod
    def for_model(cls, model: Any, speaker: str | int | None) -> PriorSource:
        """The source of `model.prior` for a speaker of `model` (by name), or None = unknown."""
        if model.prior is None:
            raise SpeechVQError("this model has no prior (train one with `speechvq train-prior`)")
        index = None if speaker is None else model.speaker_id(speaker)
        return cls(model.prior, index)

    def reset(self) -> None:
        self._state = None

    def next(self, previous_code: int | None) -> np.ndarray:
        import torch

        from speechvq.codec.entropy import softmax_probabilities

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                if self._state is None or previous_code is None:
                    device = next(self.prior.parameters()).device
                    self._state = self.prior.start(torch.tensor([self.speaker], device=device))
                logits = self.prior.step(previous_code, self._state)  # (1, K)
            return softmax_probabilities(logits[0].float().cpu().numpy())
        finally:
            torch.set_num_threads(threads)


# A voice in a header: float16 vector scale, log-F0 mean and spread, then the
# vector as int8 (32 dims: 38 bytes, 52 characters of base64). Rounding the
# vector to 8 bits moves it by under 0.4% of its largest entry.
_VOICE_HEAD = struct.Struct("<3e")


def pack_voice(voice: Voice) -> str:
    """A `Voice` as the compact text an `.svq` header stores."""
    return base64.b64encode(voice_bytes(voice)).decode("ascii")


def unpack_voice(text: str, path: str | os.PathLike = "<svq>") -> Voice:
    """The `Voice` of `pack_voice` text; a damaged one raises `SpeechVQError`."""
    try:
        data = base64.b64decode(text, validate=True)
    except ValueError:
        raise SpeechVQError(f"{path}: corrupted voice in the .svq header") from None
    return voice_from_bytes(data, path)


def voice_bytes(voice: Voice) -> bytes:
    """A `Voice` in a few bytes: its scale and log-F0 level (float16 each), then the
    vector as int8."""
    v = np.asarray(voice.vector, dtype=np.float32)
    scale = float(np.abs(v).max()) / 127 or 1.0
    q = np.clip(np.round(v / scale), -127, 127).astype(np.int8)
    return _VOICE_HEAD.pack(scale, voice.logf0_mean, voice.logf0_std) + q.tobytes()


def voice_from_bytes(data: bytes, path: str | os.PathLike = "<svq>") -> Voice:
    """The `Voice` of `voice_bytes`; a damaged one raises `SpeechVQError`."""
    try:
        scale, mean, std = _VOICE_HEAD.unpack_from(data)
    except struct.error:
        raise SpeechVQError(f"{path}: corrupted voice") from None
    q = np.frombuffer(data[_VOICE_HEAD.size :], dtype=np.int8)
    return Voice(vector=q.astype(np.float32) * np.float32(scale), logf0_mean=mean, logf0_std=std)
