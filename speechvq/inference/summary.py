"""What a loaded model is, as rows of (field, value) text: `speechvq info` and the web page."""

from __future__ import annotations

import re
from typing import Any


def describe_model(m: Any) -> list[tuple[str, str]]:
    """Rates, codebook, bitrate, decoder, voices, size, training and prior of a `SpeechVQ`."""
    cfg = m.config
    rows = [
        ("sample rate", f"{cfg.sample_rate} Hz"),
        ("hop", f"{cfg.hop_length} samples ({cfg.frame_rate:g} frames/s)"),
        ("codebook", f"K = {cfg.quantizer.codebook_size}, D = {cfg.quantizer.dim}"),
        ("nominal bitrate", f"{cfg.nominal_bitrate:g} bit/s"),
        ("decoder", m.decoder.describe()),
        ("pitch path", "on" if cfg.pitch.enabled else "off"),
        (
            "voices",
            f"any (speaker encoder, {cfg.decoder.speaker_dim}-dim vectors)"
            if m.speaker_encoder is not None
            else "the training speakers, by name",
        ),
        ("speakers", str(len(cfg.speakers))),
        ("parameters", f"{m.num_parameters():,}"),
        ("written by", f"speechvq {m.metadata.get('package_version', '?')}"),
    ]
    from speechvq.models.streaming import algorithmic_latency

    latency = algorithmic_latency(m)
    if latency is None:
        rows.append(("streaming", "no (non-causal networks: the whole input is needed)"))
    else:
        frame = 1000 * m.hop_length / m.sample_rate
        rows.append(
            (
                "streaming",
                f"yes: algorithmic latency {1000 * latency:.0f} ms (the {frame:.0f} ms frame, "
                f"then {1000 * latency - frame:.0f} ms held back by the synthesiser)",
            )
        )
        from speechvq.inference.streaming import packet_code

        code = packet_code(m)
        if code.name == "fixed":
            bits = int(code.lengths[0, 0])
            text = f"fixed: {bits} bits a code (no table: `speechvq train-prior --bigram`)"
        else:
            rates = []  # the held-out bitrates `train-prior --bigram` wrote, by packet ms
            for k, v in m.metadata.items():
                hit = re.fullmatch(r"packet_code_bitrate_(\d+)ms", k)
                if hit:
                    rates.append((int(hit[1]), float(v)))
            held = ", ".join(f"{r:,.0f} bit/s at {ms} ms" for ms, r in sorted(rates))
            text = "bigram table" + (f"; held out {held} packets" if held else "")
        rows.append(("packet code", text))
    for key in ("training_steps", "training_hours", "trained_on"):
        if key in m.metadata:
            rows.append((key.replace("_", " "), m.metadata[key]))
    if m.prior is not None:
        p = m.prior.config
        rows.append(
            ("prior", f"{p.wavenet.layers} layers, receptive field {p.receptive_field} codes")
        )
    if "prior_bits_per_code" in m.metadata:
        rows.append(
            (
                "prior held out",
                f"{m.metadata['prior_bits_per_code']} bits/code = "
                f"{m.metadata['prior_bitrate']} bit/s",
            )
        )
    if "prior_codes" in m.metadata:  # since 0.18.0: the encoder's, or searched
        rows.append(("prior trained on", f"codes: {m.metadata['prior_codes']}"))
    return rows
