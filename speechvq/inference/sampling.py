"""Making up speech: codes sampled from the model's prior, then decoded in a voice."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from speechvq.errors import SpeechVQError


def sample_speech(
    model: Any,
    seconds: float,
    speaker: str | int | None = None,
    temperature: float = 1.0,
    seed: int | None = None,
    *,
    decoder_temperature: float = 1.0,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Speech made up by the prior: `[round(seconds * sample_rate)]` float32 at `model.sample_rate`.

    Samples codes from `model.prior` (at `temperature`, conditioned on
    `speaker`, default the model's first), then decodes them in that voice
    with the model's decoder. `seed` fixes both draws. `progress(done, frames)`
    follows the (slow, one code at a time) sampling of the codes.
    """
    from speechvq.models.prior import sample_codes

    if model.prior is None:
        raise SpeechVQError("this model has no prior (train one with `speechvq train-prior`)")
    if not seconds > 0:
        raise SpeechVQError(f"--seconds must be positive, not {seconds}")
    if speaker is None:
        speaker = model.speakers[0] if model.speakers else 0
    index = model.speaker_id(speaker)
    samples = round(seconds * model.sample_rate)
    frames = -(-samples // model.hop_length)
    codes = sample_codes(model.prior, frames, index, temperature, seed, progress)
    wave = model.decode(codes, speaker, temperature=decoder_temperature, seed=seed)
    return wave[:samples]
