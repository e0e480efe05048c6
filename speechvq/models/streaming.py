"""Streaming encode and decode (issue 18): codes and audio as they arrive.

The layers keep their own state (`models.causal`, after Moshi's
`with model.streaming(batch_size):`); the classes here feed them.

`StreamEncoder` runs a causal encoder and the quantiser on audio as it
arrives: `push(samples)` returns the codes of the frames completed so far,
`flush()` those of the last, zero-padded frame. Its codes equal
`SpeechVQ.encode`'s. `StreamDecoder` is its counterpart: codes in, audio out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from speechvq.errors import SpeechVQError
from speechvq.models.causal import streaming


class StreamEncoder:
    """Codes of audio as it arrives, from a model with a causal encoder (`encoder.causal`).

    `push(samples [T])` at the model's rate returns the codes `[n]` of the
    frames that are complete; `flush()` zero-pads the last partial frame and
    returns its code (if any), then ends the stream. The codes equal
    `model.encode` of the whole input.
    """

    def __init__(self, model: Any):
        if not model.config.encoder.causal:
            raise SpeechVQError(
                "this model's encoder is not causal: it cannot stream (use a -stream preset)"
            )
        self.model = model
        self.device = model._device  # once: it walks the parameters
        self.hop = model.hop_length
        self.pending = np.zeros(0, dtype=np.float32)  # samples of the frame not yet complete
        self.samples = 0
        self.norms = model.quantizer.code_norms()  # once, not each push
        self._context = streaming(model.encoder, batch_size=1)
        self._context.__enter__()
        self.closed = False
        model.eval()

    @torch.no_grad()
    def push(self, samples: np.ndarray) -> np.ndarray:
        if self.closed:
            raise SpeechVQError("this stream is flushed; start another")
        x = np.concatenate([self.pending, np.asarray(samples, dtype=np.float32).reshape(-1)])
        whole = x.size // self.hop * self.hop
        self.pending = x[whole:]
        self.samples += x.size - self.pending.size
        if whole == 0:
            return np.zeros(0, dtype=np.int64)
        chunk = torch.from_numpy(np.ascontiguousarray(x[:whole]))[None, None]
        latents = self.model.encoder(chunk.to(self.device))[0].float()  # [D, n]
        codes = self.model.quantizer.nearest(latents.transpose(0, 1), self.norms)
        return codes.cpu().numpy().astype(np.int64)

    def flush(self) -> np.ndarray:
        """The last frame's code (zero-padded) if samples are left over, or none; ends it."""
        codes = np.zeros(0, dtype=np.int64)
        if self.pending.size:
            tail = np.zeros(self.hop, dtype=np.float32)
            tail[: self.pending.size] = self.pending
            self.pending = np.zeros(0, dtype=np.float32)
            codes = self.push(tail)
        self.close()
        return codes

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._context.__exit__(None, None, None)


class StreamDecoder:
    """Audio of codes as they arrive, in one voice, from a model whose decoder is causal.

    `push(codes [n])` returns the samples that are final, `flush()` the rest
    (the synthesiser holds back `synthesis_stream.HOLD` frames), and ends
    the stream. The audio equals `model.decode(all codes, voice, seed=seed)`
    up to float rounding, however the codes are cut. With `match` and a voice
    measured from recordings (`Voice.codes`), the codes are first moved towards
    it as they arrive (`matching.RunningMatch`); the audio then equals the
    decode of the codes that one `RunningMatch` push of all of them gives.
    """

    def __init__(self, model: Any, voice: Any, seed: int | None = None, *, match: bool = True):
        from speechvq.models.decoders.source_filter import noise_generator
        from speechvq.models.decoders.synthesis_stream import SynthesisStream

        problem = _decoder_cannot_stream(model.config)
        if problem is not None:
            raise SpeechVQError(problem)
        self.model = model
        self.device = model._device
        self.match = match
        self.matcher = None
        self.set_voice(voice)
        gen = noise_generator(seed, self.device)  # as `SourceFilterDecoder.synthesize`
        self._contexts = [streaming(model.pitch), streaming(model.decoder)]
        for ctx in self._contexts:
            ctx.__enter__()
        self.synthesis = SynthesisStream(model.decoder, gen)
        self.closed = False
        model.eval()

    def set_voice(self, voice: Any) -> None:
        """Decode the codes pushed from now on in `voice` (a name or a `Voice`); a voice
        with code statistics keeps the running statistics of the codes so far."""
        from speechvq.models.matching import RunningMatch

        self.voice, self.mean, self.std = self.model._voice_tensors(voice)
        target = getattr(voice, "codes", None) if self.match else None
        if target is None:
            self.matcher = None
        elif self.matcher is None:
            self.matcher = RunningMatch(target)
        else:
            self.matcher.target = target

    @torch.no_grad()
    def push(self, codes: np.ndarray) -> np.ndarray:
        from speechvq.models.pitch import PitchPredictor

        if self.closed:
            raise SpeechVQError("this stream is flushed; start another")
        if len(codes) == 0:
            return np.zeros(0, dtype=np.float32)
        codes = self.model.check_codes(np.asarray(codes).reshape(-1))
        m = self.model
        latents = m.quantizer.lookup(torch.from_numpy(codes)[None].to(self.device))
        if self.matcher is not None:
            moved = self.matcher.push(latents[0].float().cpu().numpy())
            z = torch.from_numpy(moved)[None].to(self.device)
            latents = m.quantizer.lookup(m.quantizer.codes(z))
        f0 = PitchPredictor.to_hz(m.pitch(latents), self.mean, self.std, m.config.pitch)
        controls = m.decoder.controls(latents, self.voice, f0)
        return self.synthesis.push(controls)[0].cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def flush(self) -> np.ndarray:
        if self.closed:
            raise SpeechVQError("this stream is flushed; start another")
        out = self.synthesis.flush()[0].cpu().numpy().astype(np.float32)
        self.close()
        return out

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for ctx in reversed(self._contexts):
                ctx.__exit__(None, None, None)


def algorithmic_latency(model: Any) -> float | None:
    """Seconds from a sample's arrival to its decoded sample, beyond compute and chunking:
    the frame it completes plus the frames the synthesiser holds back; None if the model
    cannot stream."""
    from speechvq.models.decoders.synthesis_stream import HOLD

    cfg = model.config
    if not cfg.encoder.causal or _decoder_cannot_stream(cfg) is not None:
        return None
    return (1 + HOLD) * model.hop_length / model.sample_rate


def _decoder_cannot_stream(cfg: Any) -> str | None:
    """Why a model of config `cfg` cannot decode as a stream, or None if it can."""
    if cfg.decoder.kind != "source-filter" or not cfg.decoder.source_filter.causal:
        return (
            "this model's decoder is not a causal source-filter decoder: it cannot stream "
            "(use a -stream preset)"
        )
    if not (cfg.pitch.enabled and cfg.pitch.causal):
        return "this model's F0 predictor is not causal: it cannot stream"
    return None
