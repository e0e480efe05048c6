"""Frozen configuration dataclasses, one per component, gathered in `ModelConfig`.

Modules are built from these explicitly (nanoGPT's `GPTConfig` style). A
config round-trips through plain JSON (`to_dict` / `from_dict`), which is how
the model file stores it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from speechvq.errors import SpeechVQError

# How far one-shot conversion aims past the target, away from the input's own voice
# (`SpeechVQ.convert`'s `strength`, `models.voice.extrapolate`): on `small-spk`'s 500
# conversions among unseen speakers, 1.5 identified the target in 76.2% against 72.4%
# at 1 (1.25: 75.0%, 2: 72.6%; docs/speaker.md).
CONVERT_STRENGTH = 1.5
# Then how far each matched frame moves towards the mean of its nearest frames of the
# target's recordings (`convert`'s `blend`, `models.matching.knn_blend`; 0 = not at all),
# and how many nearest frames. Off: on the same 500 conversions, blends of 0.25-1 with 4
# or 8 neighbours landed within two points of none, either way, at a cost in STOI
# (docs/speaker.md).
CONVERT_BLEND = 0.0
CONVERT_NEIGHBOURS = 4
# Steps of tuning a recorded voice's vector on its recordings (speaker adaptation,
# `models.voice.adapt_voice`; 0: the speaker encoder's vector as it is): for the voice
# `compress` stores of its input, and for a voice given as recordings (`convert
# --target-wav`, `decode --speaker-wav`, `SpeechVQ.voice`). On `small-spk`, 60 steps
# lifted the similarity of unseen speakers' `compress`/`decompress` from 0.785 to 0.817
# (seen speakers: 0.746 to 0.786) and one-shot conversion from 76.2% to 80.2% identified
# (docs/speaker.md); a step costs about 0.2-0.4 s of one CPU thread, whatever the
# audio's length.
COMPRESS_ADAPT_STEPS = 60
REFERENCE_ADAPT_STEPS = 60
# Steps per 4 s window of `compress`'s code search by synthesis (`inference.code_search`,
# for a parallel decoder; 0: the encoder's codes as they are). On `small-spk`'s held-out
# files, 30 steps lifted STOI from 0.838 to 0.861 (seen speakers) and 0.798 to 0.827
# (unseen), PESQ from 1.59 to 1.70 and 1.70 to 1.80, at about 3 s of one CPU thread per
# second of audio (docs/code-search.md; 60 steps gained 0.003 STOI more, seen speakers).
COMPRESS_SEARCH_STEPS = 30


@dataclass(frozen=True)
class EncoderConfig:
    """Strided 1-D convolutional encoder (VQ-VAE §4.3: 6 convs, kernel 4, stride 2)."""

    channels: int = 128
    latent_dim: int = 64
    downsamples: int = 6  # hop = 2 ** downsamples = 64 samples
    residual_blocks: int = 3  # dilated residual blocks at the frame rate
    kernel_size: int = 4
    # Causal convolutions (padded on the left only), so that it can stream
    # (`models.streaming`): a frame's latent reads no audio after the frame.
    causal: bool = False


@dataclass(frozen=True)
class QuantizerConfig:
    """Vector quantiser (VQ-VAE §3.1-3.2, EMA update from appendix A.1)."""

    codebook_size: int = 512
    dim: int = 64
    beta: float = 0.25  # commitment cost
    ema: bool = True
    decay: float = 0.99
    epsilon: float = 1e-5
    kmeans_init: bool = True
    kmeans_iters: int = 10
    kmeans_vectors: int = 8192  # encoder outputs gathered over the first batches for k-means
    # A code whose usage (an EMA over steps, decay `usage_decay`) falls below
    # this share of the mean code usage is restarted from an encoder output of
    # the current batch (Jukebox/SoundStream practice against codebook collapse).
    dead_code_threshold: float = 0.03
    usage_decay: float = 0.9  # an unused code is restarted after ~33 steps


@dataclass(frozen=True)
class WaveNetConfig:
    """A causal stack of gated dilated convolutions (WaveNet §2.3-2.4)."""

    layers: int = 20
    dilation_cycle: int = 10  # dilations 1, 2, 4, ... 2**(cycle-1), repeated
    residual_channels: int = 64
    gate_channels: int = 128
    skip_channels: int = 64
    end_channels: int = 128
    kernel_size: int = 2

    @property
    def receptive_field(self) -> int:
        dilations = [2 ** (i % self.dilation_cycle) for i in range(self.layers)]
        return (self.kernel_size - 1) * sum(dilations) + 1


@dataclass(frozen=True)
class PitchConfig:
    """The pitch path (issue 7): an F0-driven harmonic source for the decoder.

    The decoder gets sines at the harmonics of F0 as extra input channels
    (neural source-filter, Wang et al. 2019) and log-F0/voicing as conditioning.
    At decode time F0 comes from a small predictor that reads the codes and
    outputs a speaker-normalised log-F0 contour and voicing; the target
    speaker's log-F0 mean and spread (stored in the model) set its level, so
    conversion moves pitch to the target speaker and the bitrate is unchanged.
    """

    enabled: bool = False
    harmonics: int = 8
    source_amplitude: float = 0.1
    predictor_channels: int = 128
    predictor_layers: int = 3
    # 0: plain convolutions (kernel 5, +-2 frames each); N > 0: residual blocks
    # with dilations 1, 2, ... 2**(N-1) (kernel 3), for intonation-length context.
    predictor_dilation_cycle: int = 0
    f0_floor: float = 50.0
    f0_ceil: float = 800.0
    causal: bool = False  # the predictor reads no later frame (it can stream)


@dataclass(frozen=True)
class SourceFilterConfig:
    """The harmonic-plus-noise decoder (`models.decoders.source_filter`): frame net and banks."""

    channels: int = 256
    layers: int = 8  # dilated residual blocks over frames (non-causal)
    kernel_size: int = 3
    dilation_cycle: int = 4  # dilations 1, 2, 4, 8, repeated: +-31 frames (124 ms) of context
    harmonics: int = 128  # reaches Nyquist down to F0 = 62.5 Hz
    envelope_bins: int = 129  # harmonic envelope, 62.5 Hz apart over 0..8 kHz
    noise_bins: int = 65  # noise filter magnitude, 125 Hz apart
    causal: bool = False  # the frame network reads no later frame (it can stream)


@dataclass(frozen=True)
class PostFilterConfig:
    """The parallel WaveNet after the source-filter synthesiser (decoder kind
    `sf-wavenet`, `models.decoders.sf_wavenet`): non-causal, gated, dilated
    convolutions over samples, as Parallel WaveGAN's generator."""

    channels: int = 64  # residual channels (Parallel WaveGAN: 64)
    layers: int = 10
    kernel_size: int = 3
    dilation_cycle: int = 10  # dilations 1 ... 512: +-2046 samples (128 ms) of context
    cond_channels: int = 64  # the frame network's features, projected, then upsampled
    # 1: the WaveNet runs on samples. 4 or 8: on that many sub-bands of a PQMF
    # bank (`models.pqmf`), at 1/bands of the rate: bands x fewer steps, and
    # bands x the context for the same dilations (Multi-band MelGAN).
    bands: int = 1


@dataclass(frozen=True)
class SpeakerEncoderConfig:
    """The speaker encoder (`models.speaker_encoder`): a voice vector from a recording.

    Off by default (the decoder then knows its training speakers by name
    only). On, the decoder is conditioned on the vector of a reference
    recording, so any voice can be decoded or converted to; the vector has
    the decoder's `speaker_dim`.
    """

    enabled: bool = False
    n_mels: int = 80
    n_fft: int = 512  # 32 ms at 16 kHz
    hop: int = 160  # 10 ms
    channels: int = 256
    layers: int = 4  # dilated residual conv layers after the first
    # Frames more than this many dB below the recording's loudest are left out of
    # the pooling (silence carries no voice).
    floor_db: float = 50.0


DECODER_KINDS = ("wavenet", "source-filter", "sf-wavenet")


@dataclass(frozen=True)
class DecoderConfig:
    """The speaker-conditioned decoder: the paper's WaveNet over 8-bit mu-law samples,
    or (`kind="source-filter"`) a harmonic-plus-noise synthesiser driven by F0."""

    kind: str = "wavenet"
    wavenet: WaveNetConfig = field(default_factory=WaveNetConfig)
    source_filter: SourceFilterConfig = field(default_factory=SourceFilterConfig)
    post_filter: PostFilterConfig = field(default_factory=PostFilterConfig)  # kind sf-wavenet
    quantization_channels: int = 256  # 8-bit mu-law
    speaker_dim: int = 32
    cond_channels: int = 128
    cond_layers: int = 2  # non-causal convs over the latents before upsampling
    preemphasis: float = 0.0  # applied before mu-law (LPCNet); 0 disables


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a `SpeechVQ` model, with its speaker table."""

    sample_rate: int = 16000
    speakers: tuple[str, ...] = ()
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    pitch: PitchConfig = field(default_factory=PitchConfig)
    speaker_encoder: SpeakerEncoderConfig = field(default_factory=SpeakerEncoderConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "speakers", tuple(str(s) for s in self.speakers))
        if len(set(self.speakers)) != len(self.speakers):
            raise SpeechVQError("speaker list has duplicates")
        if self.quantizer.dim != self.encoder.latent_dim:
            raise SpeechVQError(
                f"quantizer dim {self.quantizer.dim} != encoder latent_dim "
                f"{self.encoder.latent_dim}"
            )
        if self.decoder.kind not in DECODER_KINDS:
            kinds = ", ".join(DECODER_KINDS)
            raise SpeechVQError(
                f"unknown decoder kind {self.decoder.kind!r}; choose one of {kinds}"
            )
        if self.decoder.kind in ("source-filter", "sf-wavenet") and not self.pitch.enabled:
            raise SpeechVQError("the source-filter decoder needs the pitch path (pitch.enabled)")

    @property
    def hop_length(self) -> int:
        """Samples per code frame (64 by default: 250 frames/s at 16 kHz)."""
        return 2**self.encoder.downsamples

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def bits_per_code(self) -> float:
        import math

        return math.log2(self.quantizer.codebook_size)

    @property
    def nominal_bitrate(self) -> float:
        """Bits per second before entropy coding: frame rate x log2(K)."""
        return self.frame_rate * self.bits_per_code

    def with_speakers(self, speakers: tuple[str, ...] | list[str]) -> ModelConfig:
        return dataclasses.replace(self, speakers=tuple(speakers))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["speakers"] = list(self.speakers)
        if not self.speaker_encoder.enabled:
            # Off, it is left out: the configs (and so the model hashes that `.svq`
            # files check) of models from before it existed stay as they were.
            del d["speaker_encoder"]
        # The same for the causal switches: absent from older models when off.
        for part in (d["encoder"], d["decoder"]["source_filter"], d["pitch"]):
            if not part["causal"]:
                del part["causal"]
        if self.decoder.kind != "sf-wavenet":
            del d["decoder"]["post_filter"]  # the same: only that kind has one
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Rebuild from `to_dict` output; unknown keys are an error, missing ones default."""
        d = dict(d)
        dec = dict(d.pop("decoder", {}))
        wavenet = build_dataclass(WaveNetConfig, dec.pop("wavenet", {}))
        source_filter = build_dataclass(SourceFilterConfig, dec.pop("source_filter", {}))
        post_filter = build_dataclass(PostFilterConfig, dec.pop("post_filter", {}))
        return build_dataclass(
            cls,
            {
                **d,
                "speakers": tuple(d.get("speakers", ())),
                "encoder": build_dataclass(EncoderConfig, d.get("encoder", {})),
                "quantizer": build_dataclass(QuantizerConfig, d.get("quantizer", {})),
                "decoder": build_dataclass(
                    DecoderConfig,
                    {
                        **dec,
                        "wavenet": wavenet,
                        "source_filter": source_filter,
                        "post_filter": post_filter,
                    },
                ),
                "pitch": build_dataclass(PitchConfig, d.get("pitch", {})),
                "speaker_encoder": build_dataclass(
                    SpeakerEncoderConfig, d.get("speaker_encoder", {})
                ),
            },
        )

    @classmethod
    def preset(
        cls, name: str, speakers: tuple[str, ...] | list[str] = (), pitch: bool | None = None
    ) -> ModelConfig:
        """`tiny` (tests, seconds), `small` (a 2-core CPU), `paper` (the paper's sizes, a GPU);
        `small-sf` / `tiny-sf` swap the WaveNet for the source-filter decoder, and
        `small-sf-spk` / `tiny-sf-spk` add a speaker encoder (any voice), and
        `small-sfwn` / `tiny-sfwn` put a parallel WaveNet after the
        source-filter synthesiser (decoder kind `sf-wavenet`), and
        `small-stream` / `tiny-stream` are `small-sf` / `tiny-sf` with every
        network causal (streaming), `small-stream-spk` / `tiny-stream-spk` the
        same with the speaker encoder.

        `pitch` switches the pitch path on or off; by default `small` has it
        on (it is what makes a CPU-trained decoder voiced, see README) and the
        others off.
        """
        if name not in PRESETS:
            raise SpeechVQError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        cfg = PRESETS[name]
        if pitch is not None:
            cfg = dataclasses.replace(cfg, pitch=dataclasses.replace(cfg.pitch, enabled=pitch))
        return cfg.with_speakers(speakers)


def build_dataclass(cls: type, d: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise SpeechVQError(f"unknown {cls.__name__} fields: {', '.join(sorted(unknown))}")
    return cls(**d)


PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(
        encoder=EncoderConfig(channels=16, latent_dim=8, residual_blocks=1),
        quantizer=QuantizerConfig(codebook_size=16, dim=8),
        decoder=DecoderConfig(
            wavenet=WaveNetConfig(
                layers=4,
                dilation_cycle=4,
                residual_channels=16,
                gate_channels=32,
                skip_channels=16,
                end_channels=32,
            ),
            speaker_dim=8,
            cond_channels=16,
            cond_layers=1,
        ),
        pitch=PitchConfig(harmonics=4, predictor_channels=16, predictor_layers=1),
    ),
    # Pre-emphasis before mu-law (LPCNet) shapes the decoder's sampling noise
    # under the speech spectrum; de-emphasis undoes it after synthesis.
    "small": ModelConfig(decoder=DecoderConfig(preemphasis=0.86), pitch=PitchConfig(enabled=True)),
    # The shipped model's architecture: `small`'s encoder and codebook with the
    # source-filter decoder, which learns voiced speech on a CPU budget (issue 7).
    "small-sf": ModelConfig(
        decoder=DecoderConfig(kind="source-filter"), pitch=PitchConfig(enabled=True)
    ),
    "tiny-sf": ModelConfig(
        encoder=EncoderConfig(channels=16, latent_dim=8, residual_blocks=1),
        quantizer=QuantizerConfig(codebook_size=16, dim=8),
        decoder=DecoderConfig(
            kind="source-filter",
            speaker_dim=8,
            source_filter=SourceFilterConfig(
                channels=16, layers=2, harmonics=32, envelope_bins=33, noise_bins=17
            ),
        ),
        pitch=PitchConfig(enabled=True, predictor_channels=16, predictor_layers=1),
    ),
    "paper": ModelConfig(
        encoder=EncoderConfig(channels=512, latent_dim=64, residual_blocks=3),
        decoder=DecoderConfig(
            wavenet=WaveNetConfig(
                layers=30,
                dilation_cycle=10,
                residual_channels=256,
                gate_channels=512,
                skip_channels=256,
                end_channels=256,
            ),
            speaker_dim=64,
            cond_channels=256,
            cond_layers=2,
        ),
    ),
}
# `small-sf` and `tiny-sf` that decode any voice: a speaker encoder in place of the names.
PRESETS["small-sf-spk"] = dataclasses.replace(
    PRESETS["small-sf"], speaker_encoder=SpeakerEncoderConfig(enabled=True)
)
PRESETS["tiny-sf-spk"] = dataclasses.replace(
    PRESETS["tiny-sf"],
    speaker_encoder=SpeakerEncoderConfig(enabled=True, n_mels=20, channels=16, layers=1),
)
# The source-filter decoder with a parallel WaveNet after it (issue 17).
PRESETS["small-sfwn"] = dataclasses.replace(
    PRESETS["small-sf"],
    decoder=dataclasses.replace(PRESETS["small-sf"].decoder, kind="sf-wavenet"),
)
PRESETS["tiny-sfwn"] = dataclasses.replace(
    PRESETS["tiny-sf"],
    decoder=dataclasses.replace(
        PRESETS["tiny-sf"].decoder,
        kind="sf-wavenet",
        post_filter=PostFilterConfig(channels=8, layers=3, dilation_cycle=3, cond_channels=8),
    ),
)
PRESETS["small-sfwn-spk"] = dataclasses.replace(
    PRESETS["small-sfwn"], speaker_encoder=PRESETS["small-sf-spk"].speaker_encoder
)


# Streaming (issue 18): every network causal, so codes and audio can be made as
# the input arrives (`models.streaming`).
def _causal(cfg: ModelConfig) -> ModelConfig:
    dec = cfg.decoder
    return dataclasses.replace(
        cfg,
        encoder=dataclasses.replace(cfg.encoder, causal=True),
        decoder=dataclasses.replace(
            dec, source_filter=dataclasses.replace(dec.source_filter, causal=True)
        ),
        pitch=dataclasses.replace(cfg.pitch, causal=True),
    )


PRESETS["small-stream"] = _causal(PRESETS["small-sf"])
PRESETS["tiny-stream"] = _causal(PRESETS["tiny-sf"])
PRESETS["small-stream-spk"] = _causal(PRESETS["small-sf-spk"])  # a live voice changer to any voice
PRESETS["tiny-stream-spk"] = _causal(PRESETS["tiny-sf-spk"])
