"""Classic speech codecs to compare against: codec2 (c2enc/c2dec) and Opus (opus-tools).

Each baseline round-trips a `[T]` waveform through the real command-line
codec in a temporary folder and returns it at the input's sample rate, so
`speechvq evaluate` scores every system on the same samples. The binaries
come from Debian (`apt-get install codec2 opus-tools`); a missing one makes
`Baseline.missing()` return the reason, and the evaluation skips that system.

- codec2 (Rowe, codec2 1.0): 8 kHz, raw signed 16-bit mono in and out;
  "codec2-3200", "codec2-2400", ... name its modes.
- Opus (RFC 6716) through opusenc/opusdec: "opus-6k" is `opusenc --bitrate 6`
  (VBR, as opusenc does by default; at 6 kbit/s libopus uses SILK narrowband).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechvq.audio.io import resample, to_pcm16
from speechvq.errors import SpeechVQError

DEFAULT_BASELINES = ("codec2-2400", "codec2-3200", "opus-6k")
CODEC2_MODES = ("3200", "2400", "1600", "1400", "1300", "1200", "700C", "450")
CODEC2_RATE = 8000
OPUS_DECODE_RATES = (8000, 12000, 16000, 24000, 48000)  # what opusdec --rate accepts


@dataclass(frozen=True)
class Baseline:
    """One classic codec at one setting: `family` "codec2" or "opus"."""

    name: str
    family: str
    mode: str  # codec2 mode ("2400") or Opus bitrate in kbit/s ("6")
    bitrate: float  # nominal bit/s

    @property
    def tools(self) -> tuple[str, str]:
        return ("c2enc", "c2dec") if self.family == "codec2" else ("opusenc", "opusdec")

    def missing(self) -> str | None:
        """Why this codec cannot run here, or None if its binaries are on PATH."""
        absent = [t for t in self.tools if shutil.which(t) is None]
        if not absent:
            return None
        package = "codec2" if self.family == "codec2" else "opus-tools"
        return f"{' and '.join(absent)} not found (apt-get install {package})"

    def roundtrip(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        """Encode and decode `wave` `[T]`; returns float32 `[T']` at `sample_rate`.

        The output keeps the codec's own delay and length: align before scoring.
        Raises `SpeechVQError` if a tool fails.
        """
        with tempfile.TemporaryDirectory(prefix=f"speechvq-{self.name}-") as tmp:
            if self.family == "codec2":
                return self._codec2(np.asarray(wave, np.float32), sample_rate, Path(tmp))
            return self._opus(np.asarray(wave, np.float32), sample_rate, Path(tmp))

    def _codec2(self, wave: np.ndarray, sample_rate: int, tmp: Path) -> np.ndarray:
        pcm, bits, out = tmp / "in.raw", tmp / "coded.bit", tmp / "out.raw"
        to_pcm16(resample(wave, sample_rate, CODEC2_RATE)).tofile(pcm)
        _run(["c2enc", self.mode, str(pcm), str(bits)], self.name)
        _run(["c2dec", self.mode, str(bits), str(out)], self.name)
        decoded = np.fromfile(out, dtype="<i2").astype(np.float32) / 32768.0
        return resample(decoded, CODEC2_RATE, sample_rate)

    def _opus(self, wave: np.ndarray, sample_rate: int, tmp: Path) -> np.ndarray:
        import soundfile as sf

        src, coded, out = tmp / "in.wav", tmp / "coded.opus", tmp / "out.wav"
        sf.write(str(src), to_pcm16(wave), sample_rate, subtype="PCM_16")
        _run(["opusenc", "--quiet", "--bitrate", self.mode, str(src), str(coded)], self.name)
        # opusdec removes the encoder's pre-skip itself; it decodes only to
        # Opus's own rates, so anything else goes through 48 kHz and soxr.
        rate = sample_rate if sample_rate in OPUS_DECODE_RATES else 48000
        _run(["opusdec", "--quiet", "--rate", str(rate), str(coded), str(out)], self.name)
        decoded, got = sf.read(str(out), dtype="float32", always_2d=True)
        return resample(decoded.mean(axis=1), got, sample_rate)


def parse_baseline(name: str) -> Baseline:
    """ "codec2-2400" / "codec2-3200" / "codec2-700C" / "opus-6k" / "opus-12k" -> `Baseline`."""
    key = name.strip()
    m = re.fullmatch(r"codec2-(\w+)", key, flags=re.IGNORECASE)
    if m:
        mode = m.group(1).upper()
        if mode not in CODEC2_MODES:
            raise SpeechVQError(
                f"unknown codec2 mode {m.group(1)!r} in {name!r}; "
                f"choose one of {', '.join(CODEC2_MODES)}"
            )
        rate = 700.0 if mode == "700C" else float(mode)
        return Baseline(name=f"codec2-{mode}", family="codec2", mode=mode, bitrate=rate)
    m = re.fullmatch(r"opus-(\d+(?:\.\d+)?)k", key, flags=re.IGNORECASE)
    if m:
        kbps = float(m.group(1))
        if not 6 <= kbps <= 256:  # opusenc's accepted range (mono)
            raise SpeechVQError(f"Opus bitrate in {name!r} must be 6-256 kbit/s")
        return Baseline(
            name=f"opus-{m.group(1)}k", family="opus", mode=m.group(1), bitrate=kbps * 1000
        )
    raise SpeechVQError(
        f"unknown baseline {name!r}; use codec2-<mode> ({', '.join(CODEC2_MODES)}) or opus-<N>k"
    )


def parse_baselines(spec: str | list[str] | tuple[str, ...]) -> tuple[Baseline, ...]:
    """A comma-separated list (or a list) of names; "" or "none" gives no baselines."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [n.strip() for n in names if n.strip() and n.strip().lower() != "none"]
    return tuple(parse_baseline(n) for n in dict.fromkeys(names))


def _run(cmd: list[str], name: str) -> None:
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    except subprocess.CalledProcessError as exc:
        err = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        raise SpeechVQError(
            f"{name}: {cmd[0]} failed ({err[-1] if err else f'exit {exc.returncode}'})"
        ) from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SpeechVQError(f"{name}: {cmd[0]} failed ({exc})") from None
