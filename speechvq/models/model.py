"""SpeechVQ: encoder, vector quantiser and speaker-conditioned WaveNet decoder.

`forward` is the training pass (teacher forcing, returns a typed
`ModelOutput`); `encode`, `decode` and `convert` are the NumPy API that the
CLI and users call.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from speechvq.audio.f0 import extract_f0
from speechvq.audio.io import resample
from speechvq.codec.pitch_track import move_level
from speechvq.config import (
    CONVERT_BLEND,
    CONVERT_NEIGHBOURS,
    CONVERT_STRENGTH,
    REFERENCE_ADAPT_STEPS,
    ModelConfig,
)
from speechvq.errors import SpeechVQError
from speechvq.models.decoders import make_decoder
from speechvq.models.decoders.base import SynthesisOptions
from speechvq.models.decoders.folding import FoldConfig
from speechvq.models.encoder import Encoder
from speechvq.models.matching import LatentStats, knn_blend, match_latents, swap_statistics
from speechvq.models.pitch import PitchPredictor
from speechvq.models.quantizer import VectorQuantizer
from speechvq.models.speaker_encoder import SpeakerEncoder
from speechvq.models.streaming import StreamDecoder, StreamEncoder
from speechvq.models.voice import Voice, adapt_voice, extrapolate, voice_from_recordings
from speechvq.version import __version__


@dataclass
class ModelOutput:
    loss: torch.Tensor  # total training loss, scalar
    # WaveNet: cross-entropy of mu-law samples, nats per sample;
    # source-filter: the multi-resolution STFT loss.
    recon_loss: torch.Tensor
    vq_loss: torch.Tensor  # commitment (+ codebook) loss
    pitch_loss: torch.Tensor  # F0 predictor loss (0 without the pitch path)
    perplexity: torch.Tensor
    usage: torch.Tensor
    codes: torch.Tensor  # [B, F]
    voice: torch.Tensor | None = None  # the speaker encoder's vectors [B, speaker_dim], if any
    output: torch.Tensor | None = None  # the reconstruction [B, T] of a parallel decoder
    latents: torch.Tensor | None = None  # the encoder's output [B, D, F], before quantisation


class SpeechVQ(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config.encoder)
        self.quantizer = VectorQuantizer(config.quantizer)
        self.decoder = make_decoder(config)  # one of `speechvq.models.decoders.DECODERS`
        n_spk = max(1, len(config.speakers))
        if config.pitch.enabled:
            self.pitch = PitchPredictor(config.encoder.latent_dim, config.pitch)
        else:
            self.pitch = None
        # Per-speaker log-F0 statistics, set from the training data (`set_pitch_stats`).
        self.register_buffer("logf0_mean", torch.full((n_spk,), math.log(150.0)))
        self.register_buffer("logf0_std", torch.full((n_spk,), 0.2))
        # With a speaker encoder the decoder hears a voice vector, and the training
        # voices are kept as the mean vector of each (`set_speaker_vectors`).
        self.speaker_encoder: SpeakerEncoder | None = None
        if config.speaker_encoder.enabled:
            S = config.decoder.speaker_dim
            self.speaker_encoder = SpeakerEncoder(config.speaker_encoder, config.sample_rate, S)
            self.register_buffer("speaker_vectors", torch.zeros(n_spk, S))
        # The WaveNet prior over codes (`speechvq.models.prior.Prior`), trained after the
        # VQ-VAE by `speechvq train-prior`; `speechvq.load` attaches it when the file has one.
        self.prior: nn.Module | None = None
        # The prefix code of packet streams (`codec.prefix`, code lengths [K + 1, K]
        # uint8), made from the training corpus's code bigrams by `speechvq
        # train-prior --bigram` (`set_packet_code`); None: 9 fixed bits a code.
        self.register_buffer("packet_code", None)  # in the state dict only when set
        # A loaded file's metadata (training steps, held-out figures; `from_file`).
        self.metadata: dict[str, str] = {}

    # Properties -------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    @property
    def speakers(self) -> tuple[str, ...]:
        return self.config.speakers

    def speaker_id(self, speaker: str | int) -> int:
        """A speaker's index; an unknown name is an error that lists the known ones."""
        if isinstance(speaker, (int, np.integer)) and 0 <= speaker < max(1, len(self.speakers)):
            return int(speaker)
        if speaker in self.speakers:
            return self.speakers.index(speaker)
        known = ", ".join(self.speakers) if self.speakers else "(none)"
        if len(self.speakers) > 20:
            known = ", ".join(self.speakers[:20]) + f", ... ({len(self.speakers)} in all)"
        raise SpeechVQError(f"unknown speaker {speaker!r}; this model's speakers: {known}")

    def set_speaker_vectors(self, vectors: torch.Tensor) -> None:
        """Store each training speaker's voice vector `[S, speaker_dim]` (the mean over
        their recordings), which `--speaker NAME` uses."""
        self.speaker_vectors.copy_(vectors)

    def voice(
        self,
        recordings: list[tuple[np.ndarray, int]],
        *,
        latents: bool = True,
        f0: list[np.ndarray] | None = None,
        adapt_steps: int = REFERENCE_ADAPT_STEPS,
        progress: bool = False,
    ) -> Voice:
        """The voice of `(wave, sample_rate)` recordings of one speaker (speaker encoder);
        `latents=False` leaves out the content statistics (`Voice.latents`), which only
        `convert` uses, and with them the content encoder's pass. `f0`: each
        recording's `input_f0` when the caller has tracked it already. The vector is
        then tuned on the recordings `adapt_steps` steps (`models.voice.adapt_voice`,
        as `convert --target-wav` does; 0: the speaker encoder's vector as it is;
        `progress` shows a bar)."""
        if f0 is None and adapt_steps > 0 and self.pitch is not None:
            # Tracked once for both: the F0 level, and the re-synthesis that tunes the vector.
            f0 = [
                self.input_f0(w, r, math.ceil(len(w) * self.sample_rate / r / self.hop_length))
                for w, r in recordings
            ]
        voice = voice_from_recordings(self, recordings, latents=latents, f0=f0)
        return adapt_voice(self, voice, recordings, adapt_steps, f0=f0, progress=progress)

    def set_pitch_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store per-speaker log-F0 mean and spread `[S]` (measured on training data)."""
        self.logf0_mean.copy_(mean)
        self.logf0_std.copy_(std.clamp(min=0.05))

    # Training ---------------------------------------------------------------

    def forward(
        self,
        wave: torch.Tensor,
        speaker: torch.Tensor,
        f0: torch.Tensor | None = None,
        encoder_input: torch.Tensor | None = None,
        reference: torch.Tensor | None = None,
        swap: torch.Tensor | None = None,
    ) -> ModelOutput:
        """Teacher-forced pass: wave `[B, T]` in [-1, 1], speaker ids `[B]`, F0 `[B, T / hop]`.

        `encoder_input` `[B, T]`, if given, is what the encoder reads instead
        of `wave` (an augmented copy, see `speechvq.audio.augment`); `wave` stays
        the target. With a speaker encoder the decoder hears the voice vector of
        `reference` `[B, T']` (other speech of the same speakers) rather than
        the speakers' table rows; the F0 targets still use the speakers' levels.
        `swap` `[B]`, if given, moves each item's latents to the statistics of
        the item it names before quantising (`matching.swap_statistics`).
        """
        z = self.encoder((wave if encoder_input is None else encoder_input)[:, None])  # (B, D, F)
        if swap is not None:
            z = swap_statistics(z, swap)
        q = self.quantizer(z)
        pitch_loss = self._pitch_loss(q.quantized, f0, speaker)
        voice, vectors = speaker, None
        if self.speaker_encoder is not None:
            if reference is None:
                raise ValueError("a model with a speaker encoder trains on reference audio")
            voice = vectors = self.speaker_encoder(reference)  # (B, S)
        recon, output = self.decoder.reconstruct(wave, q.quantized, voice, f0)
        loss = recon + q.loss + pitch_loss
        return ModelOutput(
            loss, recon, q.loss, pitch_loss, q.perplexity, q.usage, q.codes, vectors, output, z
        )

    def _pitch_loss(self, latents, f0, speaker) -> torch.Tensor:
        """The F0 predictor's loss against the tracker's F0 `[B, F]`; 0 without the pitch path."""
        if self.pitch is None:
            return torch.zeros((), device=latents.device)
        if f0 is None:
            raise ValueError("the pitch path needs F0 [B, F] in training")
        pred = self.pitch(latents)
        return PitchPredictor.loss(pred, f0, self.logf0_mean[speaker], self.logf0_std[speaker])

    # The NumPy API ----------------------------------------------------------

    @torch.no_grad()
    def encode(
        self, wave: np.ndarray, sample_rate: int, *, chunk_seconds: float = 10.0
    ) -> np.ndarray:
        """`[T]` waveform at any rate to `[ceil(T' / hop)]` int64 codes (T' after resampling).

        The end is zero-padded up to a whole frame, so audio shorter than one
        frame gives one code. Long audio is encoded in chunks of
        `chunk_seconds`, each read with `encoder_context` frames of real audio
        on either side and only its centre kept: the context covers the
        encoder's receptive field, so the codes equal those of one pass over
        the whole (up to float rounding at near-ties), while memory follows
        the chunk, not the audio (one pass over an hour would need a 1.8 GB
        distance matrix in the quantiser alone).
        """
        parts = self._encoder_chunks(wave, sample_rate, chunk_seconds)
        return np.concatenate([self.quantizer.codes(z)[0].cpu().numpy() for z in parts])

    @torch.no_grad()
    def latents(
        self, wave: np.ndarray, sample_rate: int, *, chunk_seconds: float = 10.0
    ) -> np.ndarray:
        """The encoder's output before quantisation, `[D, F]` float32 (`F` as `encode`'s):
        `quantize(latents(w, sr))` equals `encode(w, sr)`."""
        parts = self._encoder_chunks(wave, sample_rate, chunk_seconds)
        return np.concatenate([z[0].float().cpu().numpy() for z in parts], axis=1)

    @torch.no_grad()
    def quantize(self, latents: np.ndarray, *, chunk_frames: int = 2500) -> np.ndarray:
        """`[D, F]` latents to their nearest codes `[F]` int64, `chunk_frames` at a time."""
        z = torch.as_tensor(np.asarray(latents, dtype=np.float32), device=self._device)
        parts = [
            self.quantizer.codes(z[None, :, i : i + chunk_frames])[0]
            for i in range(0, z.shape[1], chunk_frames)
        ]
        return torch.cat(parts).cpu().numpy().astype(np.int64)

    @torch.no_grad()
    def code_rows(self, codes: np.ndarray) -> np.ndarray:
        """The codebook rows of codes `[F]`: `[D, F]` float32."""
        c = torch.as_tensor(self.check_codes(codes), device=self._device)
        return self.quantizer.lookup(c[None])[0].float().cpu().numpy()

    def match_codes(self, codes: np.ndarray, target: str | int | Voice) -> np.ndarray:
        """Codes `[F]` moved towards `target`'s voice, for a decoder of codes alone: their
        codebook rows matched to the statistics of the rows of the target's reference
        codes (`Voice.codes`, `models.matching`), quantised again. Unchanged when the
        target has no such statistics (a name, a file header's voice) or under 1 s of codes."""
        stats = target.codes if isinstance(target, Voice) else None
        if stats is None:
            return self.check_codes(codes)
        return self.quantize(match_latents(self.code_rows(codes), stats))

    def _encoder_chunks(self, wave: np.ndarray, sample_rate: int, chunk_seconds: float):
        """The encoder's output `[1, D, n]` of consecutive pieces of `wave` (see `encode`)."""
        if self.encoder._stream is not None:  # its layers would read and move the stream's state
            raise SpeechVQError("this model's encoder is streaming: encode with another copy")
        wave = np.asarray(wave, dtype=np.float32).reshape(-1)
        if sample_rate != self.sample_rate:
            wave = resample(wave, sample_rate, self.sample_rate)
        if wave.size == 0:
            raise SpeechVQError("cannot encode empty audio")
        hop, ctx = self.hop_length, self.encoder_context
        frames = -(-wave.size // hop)
        step = max(1, int(chunk_seconds * self.frame_rate))  # frames kept per chunk
        self.eval()
        for start in range(0, frames, step):
            stop = min(start + step, frames)
            lo, hi = max(0, start - ctx), min(frames, stop + ctx)  # hop-aligned: same stride phase
            chunk = np.zeros((hi - lo) * hop, dtype=np.float32)  # zeros: the final frame's padding
            piece = wave[lo * hop : hi * hop]
            chunk[: piece.size] = piece
            x = torch.from_numpy(chunk)[None, None].to(self._device)
            yield self.encoder(x)[:, :, start - lo : stop - lo]

    @property
    def encoder_context(self) -> int:
        """Frames of context on each side that make chunked encoding equal whole encoding:
        the encoder's reach (`Encoder.context`) and one frame of margin. `small`: 15
        frames (60 ms)."""
        return max(self.encoder.context) + 1

    def stream_encoder(self) -> StreamEncoder:
        """Codes of audio as it arrives (a model whose encoder is causal): `push(samples)`
        at the model's rate, then `flush()`; the codes equal `encode`'s."""
        return StreamEncoder(self)

    def stream_decoder(
        self, speaker: str | int | Voice, seed: int | None = None, *, match: bool = True
    ) -> StreamDecoder:
        """Audio of codes as they arrive, in `speaker`'s voice (a name or a `Voice`), from a
        model whose decoder is causal: `push(codes)`, then `flush()`; equal to `decode`.

        To a `Voice` measured from recordings the codes are first moved towards it as
        they arrive (`models.matching.RunningMatch`, from the first second on);
        `match=False` decodes them as they come."""
        return StreamDecoder(self, speaker, seed, match=match)

    @torch.no_grad()
    def decode(
        self,
        codes: np.ndarray,
        speaker: str | int | Voice,
        *,
        temperature: float = 1.0,
        seed: int | None = None,
        f0: np.ndarray | None = None,
        exact: bool = False,
        fold: FoldConfig | None = None,
    ) -> np.ndarray:
        """`[F]` codes to a `[F * hop]` float32 waveform at `sample_rate`, in `speaker`'s voice.

        `speaker` is a training speaker's name (or index), or, with a speaker
        encoder, any `Voice` (`voice(recordings)`). With the pitch path, F0 is
        predicted from the codes at the voice's pitch level unless `f0` `[F]`
        (Hz, 0 = unvoiced) is given. By default the WaveNet folds the utterance
        into overlapping segments generated as one batch (`fold`, see
        `models.decoders.synthesis`); `exact` generates it as a single stream
        (slower). The same `seed` gives the same waveform.
        The source-filter decoder is not autoregressive: it synthesises the
        whole utterance in one pass (`temperature`, `exact` and `fold` are
        WaveNet options; `seed` sets its noise).
        """
        codes = self.check_codes(codes)
        voice, mean, std = self._voice_tensors(speaker)
        self.eval()
        latents = self.quantizer.lookup(torch.from_numpy(codes)[None].to(self._device))
        f0_t = None
        if self.pitch is not None:
            if f0 is not None:
                f0_t = torch.as_tensor(np.asarray(f0, dtype=np.float32)[None], device=self._device)
            else:
                f0_t = self.f0_at_level(latents, mean, std)
        options = SynthesisOptions(temperature=temperature, seed=seed, exact=exact, fold=fold)
        return self.decoder.synthesize(latents, voice, f0_t, options)

    def voice_level(self, speaker: str | int | Voice) -> tuple[float, float]:
        """The log-F0 mean and spread that place pitch in `speaker`'s voice (a name's
        stored level, or a `Voice`'s measured one)."""
        _, mean, std = self._voice_tensors(speaker)
        return float(mean[0]), float(std[0])

    def _voice_tensors(self, speaker: str | int | Voice):
        """The decoder's speaker input (ids `[1]` or a vector `[1, S]`) and log-F0 level `[1]`."""
        dev = self._device
        if isinstance(speaker, Voice):
            if self.speaker_encoder is None:
                raise SpeechVQError("this model has no speaker encoder: give a speaker's name")
            vector = torch.as_tensor(speaker.vector, dtype=torch.float32, device=dev)[None]
            level = torch.tensor([speaker.logf0_mean, speaker.logf0_std], device=dev)
            return vector, level[:1], level[1:]
        index = torch.tensor([self.speaker_id(speaker)], device=dev)
        voice = index if self.speaker_encoder is None else self.speaker_vectors[index]
        return voice, self.logf0_mean[index], self.logf0_std[index]

    def predict_f0(self, latents: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
        """Predicted F0 `[B, F]` in Hz at the speakers' pitch level, for latents `[B, D, F]`."""
        return self.f0_at_level(latents, self.logf0_mean[speaker], self.logf0_std[speaker])

    def f0_at_level(
        self, latents: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
    ) -> torch.Tensor:
        """Predicted F0 `[B, F]` in Hz for latents `[B, D, F]` at the log-F0 level `mean`,
        `std` `[B]` (a speaker's, or a `Voice`'s from `_voice_tensors`)."""
        assert self.pitch is not None
        return PitchPredictor.to_hz(self.pitch(latents), mean, std, self.config.pitch)

    def convert(
        self,
        wave: np.ndarray,
        sample_rate: int,
        target_speaker: str | int | Voice,
        *,
        match: bool = True,
        pitch: bool = True,
        strength: float = CONVERT_STRENGTH,
        blend: float = CONVERT_BLEND,
        neighbours: int = CONVERT_NEIGHBOURS,
        **kwargs,
    ) -> np.ndarray:
        """Voice conversion: encode, then decode in `target_speaker`'s voice (a name, or a
        `Voice` from recordings); `kwargs` are `decode`'s.

        To a `Voice` measured from recordings, the encoder's output is first moved
        to the statistics it has over them (`models.matching`), which carries over
        the part of the voice that the codes keep; `match=False` decodes the
        codes of `encode` instead. With `strength` above 1 that voice (its vector
        and latent statistics) is first pushed further from the input's own, as
        far again times `strength - 1` (`models.voice.extrapolate`): the codes
        keep some of the input's voice, and overshooting makes up for it
        (docs/speaker.md has the measurements); 1 aims at the target itself.
        With `blend` above 0, each matched frame then moves that far (1: all
        the way) towards the mean of its `neighbours` nearest frames of the
        target's recordings (`matching.knn_blend`).
        With the pitch path, F0 is the input's own (WORLD Harvest, as a `.svq`
        pitch track is measured) moved to the target's register
        (`codec.pitch_track.move_level`); `pitch=False` predicts it from the codes
        instead.
        """
        if not isinstance(target_speaker, Voice):
            self.speaker_id(target_speaker)  # fail before the slow part
        voice = target_speaker
        beyond = isinstance(voice, Voice) and voice.latents is not None and strength != 1.0
        own_pitch = pitch and self.pitch is not None and kwargs.get("f0") is None
        z = self.latents(wave, sample_rate)
        f0 = self.input_f0(wave, sample_rate, z.shape[1]) if beyond or own_pitch else None
        if beyond:
            voice = self._beyond_input(wave, sample_rate, z, f0, voice, strength)
        stats = voice.latents if isinstance(voice, Voice) else None
        if match and stats is not None:
            z = match_latents(z, stats)
            if blend and voice.frames is not None:
                z = knn_blend(z, voice.frames, k=neighbours, amount=blend)
        codes = self.quantize(z)
        if own_pitch:
            kwargs["f0"] = move_level(f0, *self.voice_level(voice))
        return self.decode(codes, voice, **kwargs)

    def _beyond_input(
        self,
        wave: np.ndarray,
        sample_rate: int,
        latents: np.ndarray,
        f0: np.ndarray,
        target: Voice,
        strength: float,
    ) -> Voice:
        """`target` pushed `strength` times as far from the input's own voice; the target
        itself where the input is too short or quiet to measure a voice on. `latents`
        `[D, F]` and `f0` `[F]` are the input's, already computed by `convert`."""
        try:  # the vector and F0 level; the latent statistics come from `latents`
            source = self.voice([(wave, sample_rate)], latents=False, f0=[f0], adapt_steps=0)
        except SpeechVQError:
            return target
        return extrapolate(replace(source, latents=LatentStats.of(latents)), target, strength)

    def input_f0(self, wave: np.ndarray, sample_rate: int, num_frames: int) -> np.ndarray:
        """The F0 of a `[T]` waveform per code frame, `[num_frames]` Hz (0 = unvoiced): WORLD
        Harvest with 50/60 Hz mains hum notched out (`audio.f0.remove_hum`).

        A notch, not data preparation's 80 Hz high-pass (used here up to 0.11.1):
        on the 12 seen files of `recipes/spk/eval.sh` the notched track agrees
        with pYIN (librosa, an independent tracker) on 0.929 of the frames voiced
        in both, against 0.873 (better on 10 files, equal on 2), and the
        high-pass still voiced a pause of 60 Hz hum over hiss (tested;
        docs/pitch.md).
        """
        wave = np.asarray(wave, dtype=np.float32).reshape(-1)
        if sample_rate != self.sample_rate:
            wave = resample(wave, sample_rate, self.sample_rate)
        f0 = extract_f0(wave, self.sample_rate, self.hop_length, method="harvest", hum_notch=True)
        return np.pad(f0, (0, max(0, num_frames - f0.size)))[:num_frames]

    def check_codes(self, codes: np.ndarray) -> np.ndarray:
        """Validate a `[F]` integer code array; returns it as int64."""
        arr = np.asarray(codes)
        K = self.config.quantizer.codebook_size
        if arr.ndim != 1:
            raise SpeechVQError(f"codes must be a 1-D array of frames, got shape {arr.shape}")
        if arr.size == 0:
            raise SpeechVQError("codes array is empty")
        if not np.issubdtype(arr.dtype, np.integer):
            raise SpeechVQError(f"codes must be integers, got dtype {arr.dtype}")
        if arr.min() < 0 or arr.max() >= K:
            raise SpeechVQError(f"codes must lie in [0, {K}), got [{arr.min()}, {arr.max()}]")
        return arr.astype(np.int64)

    @property
    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save(self, path: str | os.PathLike, **extra: str) -> None:
        """Write a model file (safetensors + JSON metadata; see `speechvq.models.modelfile`)."""
        from speechvq.models.modelfile import save

        save(self, path, **extra)

    def set_packet_code(self, lengths: torch.Tensor | None) -> None:
        """Attach (or, with None, remove) the packet streams' code lengths `[K + 1, K]`."""
        K = self.config.quantizer.codebook_size
        if lengths is not None and tuple(lengths.shape) != (K + 1, K):
            shape = tuple(lengths.shape)
            raise SpeechVQError(f"packet code lengths must be [{K + 1}, {K}], not {shape}")
        self.packet_code = None if lengths is None else lengths.to(torch.uint8, copy=True)

    @classmethod
    def from_file(cls, path: str | os.PathLike, device: str = "cpu") -> SpeechVQ:
        """Rebuild a model, and its prior when the file has one, from a model file."""
        from speechvq.models.modelfile import first_line, read
        from speechvq.models.prior import Prior

        f = read(path, device)
        model = cls(f.config)
        if f.prior_config is not None:
            model.prior = Prior(f.prior_config)
        if "packet_code" in f.tensors:
            model.set_packet_code(f.tensors["packet_code"])
        try:
            missing, unexpected = model.load_state_dict(f.tensors, strict=False)
        except RuntimeError as exc:  # a tensor of the wrong shape
            raise SpeechVQError(
                f"{path}: weights do not match the config ({first_line(exc)})"
            ) from None
        if missing or unexpected:
            names = ", ".join((missing + unexpected)[:3])
            writer = f.metadata.get("package_version")
            note = ""
            if writer and writer != __version__:  # e.g. sf-wavenet files before 0.18.0
                note = f"; written by speechvq {writer}, this is {__version__}: load it with that"
            raise SpeechVQError(f"{path}: weights do not match the config ({names} ...{note})")
        model.metadata = f.metadata
        return model.to(device).eval()
