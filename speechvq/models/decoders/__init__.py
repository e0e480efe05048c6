"""The decoder kinds, each a `base.Decoder`, chosen by `DecoderConfig.kind`.

- `mulaw_wavenet`: the paper's speaker-conditioned WaveNet over 8-bit mu-law
  samples, autoregressive (fast incremental synthesis in `synthesis`,
  folded batches in `folding`);
- `source_filter`: harmonic-plus-noise synthesis at F0, in one parallel pass;
- `sf_wavenet`: that, then a parallel (non-causal, non-autoregressive)
  WaveNet that reshapes its output sample by sample.
"""

from __future__ import annotations

from speechvq.config import ModelConfig
from speechvq.models.decoders.base import Decoder
from speechvq.models.decoders.mulaw_wavenet import MulawWaveNetDecoder
from speechvq.models.decoders.sf_wavenet import SourceFilterWaveNetDecoder
from speechvq.models.decoders.source_filter import SourceFilterDecoder

# DecoderConfig.kind -> the class that implements it.
DECODERS: dict[str, type[Decoder]] = {
    "wavenet": MulawWaveNetDecoder,
    "source-filter": SourceFilterDecoder,
    "sf-wavenet": SourceFilterWaveNetDecoder,
}


def make_decoder(config: ModelConfig) -> Decoder:
    """The decoder of `config.decoder.kind`, built from the whole model config."""
    return DECODERS[config.decoder.kind](config)
