"""Per-file quality metrics: one decoded (or converted) waveform against its reference.

Every function takes NumPy `[T]` float waveforms and a sample rate, so tests
and scripts can call them directly. The heavy scorers are optional (the
`eval` extra) and imported inside the function that uses them; a missing one
raises `ImportError`, which `speechvq.evaluation.evaluate` turns into "metric skipped".

- `align`: undo a codec's delay (log-mel envelope cross-correlation, refined on
  the waveform where it matches, within +-40 ms), crop to the common length.
  Every paired metric below expects aligned inputs.
- `stoi_bands` / `stoi` (pystoi's steps; STOI is the mean of the bands), `pesq_wb`
  (ITU-T P.862.2 via the `pesq` package, 16 kHz).
- `mel_distance`: log-mel spectral distance in dB, written here (a few lines of
  NumPy) rather than pulling librosa in for one filterbank.
- `speaker_embedding` / `cosine`: resemblyzer's GE2E `VoiceEncoder` (its weights
  ship in the wheel, so it runs offline), loaded once, on the CPU.
- `dnsmos`: DNSMOS P.835 (SIG, BAK, OVRL) from speechmos's bundled ONNX models.
- `f0_scores`: WORLD harvest F0 on both signals (50/60 Hz hum notched out), then `f0_match` and
  `voicing_agreement` from `speechvq.audio.f0`.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np

from speechvq.audio.io import resample
from speechvq.audio.mel import mel_filterbank

PESQ_RATE = 16000  # wideband PESQ and DNSMOS are defined at 16 kHz
# +-40 ms, not 20: codec2's own delay is 20 ms (320 samples at 16 kHz), at the
# very edge of a +-20 ms search; see docs/evaluate.md.
MAX_LAG_S = 0.04
F0_HOP_S = 0.004  # 4 ms: the code frame of a 16 kHz model, whatever the system
# Centres of STOI's 15 1/3-octave bands (pystoi's, from 150 Hz; tested equal),
# here so that a report can be read and drawn without pystoi.
STOI_BAND_CENTRES_HZ = tuple(150.0 * 2.0 ** (k / 3) for k in range(15))


@dataclass(frozen=True)
class Alignment:
    """`reference` and `test` cropped to a common length `[T]`; `test` lagged `lag` samples."""

    reference: np.ndarray
    test: np.ndarray
    lag: int


@dataclass(frozen=True)
class STOIBands:
    """STOI's intermediate intelligibility per 1/3-octave band: the correlation of the
    test's band envelope with the reference's over 384 ms segments, averaged over
    segments. Their mean is STOI (Taal et al. 2011); NaN where the input is too short."""

    values: np.ndarray  # [15], bands centred at STOI_BAND_CENTRES_HZ

    @property
    def stoi(self) -> float:
        return float(np.mean(self.values))


@dataclass(frozen=True)
class DNSMOSScore:
    """DNSMOS P.835 (Reddy et al. 2022): speech signal, background, overall, 1-5."""

    ovrl: float
    sig: float
    bak: float


@dataclass(frozen=True)
class F0Scores:
    f0_match: float  # share of frames voiced in both with F0 within 20 %
    voicing: float  # share of frames whose voiced/unvoiced decision agrees


def align(
    reference: np.ndarray, test: np.ndarray, sample_rate: int, max_lag_s: float = MAX_LAG_S
) -> Alignment:
    """Shift `test` by its delay (within +-`max_lag_s`) and crop both to a common length.

    A positive lag means `test` is late: `test[t + lag]` matches `reference[t]`.
    Codecs add a fixed delay (codec2: 20 ms; a decoder's receptive field) that
    would otherwise ruin STOI and the frame-wise metrics. Two stages:

    1. coarse, to 1 ms: cross-correlate log-mel band envelopes. Parametric
       codecs (codec2, a WaveNet decoder) do not keep the waveform's phase, so
       the plain waveform cross-correlation peaks at a wrong pitch period; the
       envelopes do not care about phase.
    2. fine, to the sample: the waveform cross-correlation peak within +-2 ms of
       that, used only where the waveforms match (Opus, a plain delay).
    """
    from scipy.signal import correlate, correlation_lags

    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    tst = np.asarray(test, dtype=np.float64).reshape(-1)
    max_lag = int(round(max_lag_s * sample_rate))
    hop = max(1, int(round(0.001 * sample_rate)))
    coarse = _envelope_lag(ref, tst, sample_rate, hop, max_lag)
    lag = coarse
    if len(ref) and len(tst):
        corr = correlate(tst, ref, mode="full", method="fft")
        lags = correlation_lags(len(tst), len(ref), mode="full")
        window = (np.abs(lags - coarse) <= 2 * hop) & (np.abs(lags) <= max_lag)
        scale = np.sqrt(np.dot(ref, ref) * np.dot(tst, tst))
        # Only a waveform that matches (normalised peak >= 0.3: Opus ~0.8, codec2
        # ~0.1) refines the lag; otherwise the peak is a phase accident.
        if window.any() and scale > 0 and np.max(corr[window]) >= 0.3 * scale:
            lag = int(lags[window][np.argmax(corr[window])])
    if lag >= 0:
        ref_a, tst_a = reference, test[lag:]
    else:
        ref_a, tst_a = reference[-lag:], test
    n = min(len(ref_a), len(tst_a))
    return Alignment(
        reference=np.asarray(ref_a[:n], dtype=np.float32),
        test=np.asarray(tst_a[:n], dtype=np.float32),
        lag=lag,
    )


def _envelope_lag(ref: np.ndarray, tst: np.ndarray, sr: int, hop: int, max_lag: int) -> int:
    """Lag in samples (a multiple of `hop`) maximising the summed log-mel band correlations."""
    from scipy.signal import fftconvolve

    def bands(x: np.ndarray) -> np.ndarray:  # (24, frames), zero-mean per band
        win = 1 << (int(0.016 * sr) - 1).bit_length()  # ~16 ms: resolves syllable onsets
        x = np.pad(x, (win // 2, win // 2 + max(0, win - len(x))))
        frames = np.lib.stride_tricks.sliding_window_view(x, win)[::hop]
        power = np.abs(np.fft.rfft(frames * np.hanning(win), axis=1)) ** 2
        mel = mel_filterbank(sr, win, 24) @ power.T
        db = 10.0 * np.log10(np.maximum(mel, 1e-12))
        db = np.maximum(db, db.max() - 60.0)  # ignore what lies far below the speech
        return db - db.mean(axis=1, keepdims=True)

    if not (len(ref) and len(tst)):
        return 0
    r, t = bands(ref), bands(tst)
    xc = fftconvolve(t, r[:, ::-1], axes=1).sum(axis=0)  # lags -(R-1) .. T-1 in frames
    lags = np.arange(-(r.shape[1] - 1), t.shape[1]) * hop
    window = np.abs(lags) <= max_lag
    if not np.any(xc[window] > 1e-9):
        return 0
    return int(lags[window][np.argmax(xc[window])])


def stoi(reference: np.ndarray, test: np.ndarray, sample_rate: int) -> float:
    """Short-Time Objective Intelligibility (Taal et al. 2011), about 0-1; NaN if too short."""
    return stoi_bands(reference, test, sample_rate).stoi


def stoi_bands(reference: np.ndarray, test: np.ndarray, sample_rate: int) -> STOIBands:
    """STOI per 1/3-octave band (`STOIBands`), which bands a decoder loses intelligibility in.

    pystoi's own steps (resampling to 10 kHz, silent-frame removal, STFT,
    band grouping) and constants; only its last line, the mean over segments
    *and* bands, is split here into a mean over segments per band, so the
    mean of the bands equals `pystoi.stoi` (tested). Under ~0.4 s of speech
    (fewer than 30 frames) every band is NaN, where pystoi would warn and
    return 1e-5, which would drag a mean down.
    """
    import importlib

    from pystoi import utils

    # The module pystoi.stoi (its constants); `from pystoi import stoi` is the function.
    s = importlib.import_module("pystoi.stoi")
    x = np.asarray(reference, dtype=np.float64).reshape(-1)
    y = np.asarray(test, dtype=np.float64).reshape(-1)
    if sample_rate != s.FS:
        x, y = utils.resample_oct(x, s.FS, sample_rate), utils.resample_oct(y, s.FS, sample_rate)
    x, y = utils.remove_silent_frames(x, y, s.DYN_RANGE, s.N_FRAME, s.N_FRAME // 2)
    bands = np.sqrt(s.OBM @ np.abs(utils.stft(x, s.N_FRAME, s.NFFT, overlap=2).T) ** 2)
    test_bands = np.sqrt(s.OBM @ np.abs(utils.stft(y, s.N_FRAME, s.NFFT, overlap=2).T) ** 2)
    if bands.shape[1] < s.N:
        return STOIBands(np.full(len(STOI_BAND_CENTRES_HZ), np.nan))
    windows = np.lib.stride_tricks.sliding_window_view  # segments of N frames, hop 1
    xs = windows(bands, s.N, axis=1).transpose(1, 0, 2)  # [segments, bands, N]
    ys = windows(test_bands, s.N, axis=1).transpose(1, 0, 2)
    # Normalise each test segment to the reference's energy, clip it to at most
    # -BETA dB above it (the signal-to-distortion bound), then correlate.
    ys = (
        ys
        * np.linalg.norm(xs, axis=2, keepdims=True)
        / (np.linalg.norm(ys, axis=2, keepdims=True) + utils.EPS)
    )
    ys = np.minimum(ys, xs * (1 + 10 ** (-s.BETA / 20)))
    ys = ys - ys.mean(axis=2, keepdims=True)
    xs = xs - xs.mean(axis=2, keepdims=True)
    ys = ys / (np.linalg.norm(ys, axis=2, keepdims=True) + utils.EPS)
    xs = xs / (np.linalg.norm(xs, axis=2, keepdims=True) + utils.EPS)
    return STOIBands((xs * ys).sum(axis=2).mean(axis=0))


def pesq_wb(reference: np.ndarray, test: np.ndarray, sample_rate: int) -> float:
    """Wideband PESQ MOS-LQO (P.862.2), 1.04-4.64; NaN where PESQ finds no speech."""
    from pesq import PesqError, pesq

    ref = resample(np.asarray(reference, np.float32), sample_rate, PESQ_RATE)
    tst = resample(np.asarray(test, np.float32), sample_rate, PESQ_RATE)
    if not (np.any(ref) and np.any(tst)):
        return float("nan")  # the pesq wrapper would divide by a zero peak
    try:
        return float(pesq(PESQ_RATE, ref, tst, "wb"))
    except PesqError:  # e.g. NoUtterancesError on silence
        return float("nan")


def log_mel_spectrogram(
    wave: np.ndarray, sample_rate: int, n_mels: int = 80, win_s: float = 0.025, hop_s: float = 0.01
) -> np.ndarray:
    """Mel power spectrogram in dB, `[n_mels, frames]` (25 ms Hann window, 10 ms hop)."""
    win = int(round(win_s * sample_rate))
    hop = int(round(hop_s * sample_rate))
    n_fft = 1 << (win - 1).bit_length()
    x = np.asarray(wave, dtype=np.float64).reshape(-1)
    x = np.pad(x, (win // 2, win // 2 + max(0, win - len(x))))
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::hop]  # (frames, win)
    power = np.abs(np.fft.rfft(frames * np.hanning(win), n=n_fft)) ** 2
    mel = mel_filterbank(sample_rate, n_fft, n_mels) @ power.T
    return 10.0 * np.log10(np.maximum(mel, 1e-12))


def mel_distance(
    reference: np.ndarray, test: np.ndarray, sample_rate: int, floor_db: float = 80.0
) -> float:
    """Log-mel spectral distance in dB: per frame, RMS over 80 bands of the dB difference.

    Both spectrograms are floored `floor_db` below the reference's peak, so
    near-silent frames (where dB differences are huge and inaudible) do not
    dominate the mean. Identical signals give 0.
    """
    ref = log_mel_spectrogram(reference, sample_rate)
    tst = log_mel_spectrogram(test, sample_rate)
    n = min(ref.shape[1], tst.shape[1])
    floor = ref.max() - floor_db
    diff = np.maximum(ref[:, :n], floor) - np.maximum(tst[:, :n], floor)
    return float(np.sqrt((diff**2).mean(axis=0)).mean())


@functools.lru_cache(maxsize=1)
def _voice_encoder():
    with warnings.catch_warnings():  # webrtcvad imports the deprecated pkg_resources
        warnings.simplefilter("ignore")
        from resemblyzer import VoiceEncoder

    # The weights ship inside the resemblyzer wheel: no download happens here.
    return VoiceEncoder("cpu", verbose=False)


def speaker_embedding(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """Unit-norm GE2E speaker embedding `[256]` (resemblyzer); NaNs if no speech is left.

    resemblyzer's preprocessing normalises loudness and trims long silences
    (webrtcvad) at 16 kHz, so the embedding reflects the voice, not the level.
    """
    encoder = _voice_encoder()
    from resemblyzer import preprocess_wav

    none = np.full(256, np.nan, dtype=np.float32)
    wave = resample(np.asarray(wave, np.float32), sample_rate, 16000)
    if not np.sqrt(np.mean(np.square(wave, dtype=np.float64))) > 1e-5:
        return none  # digital silence: resemblyzer's loudness normalisation would divide by 0
    wav = preprocess_wav(wave)
    if len(wav) < 1600:  # under 0.1 s of speech after trimming: no voice to embed
        return none
    import torch

    # One thread for this small LSTM: on a busy 2-core machine two OpenMP
    # threads made it 90 times slower (7.7 s against 0.08 s a call).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return np.asarray(encoder.embed_utterance(wav), dtype=np.float32)
    finally:
        torch.set_num_threads(threads)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings (NaN if either is NaN or zero)."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if not (na > 0 and nb > 0):
        return float("nan")
    return float(np.dot(a, b) / (na * nb))


def dnsmos(wave: np.ndarray, sample_rate: int) -> DNSMOSScore:
    """Non-intrusive DNSMOS P.835 scores of `wave` alone (no reference needed).

    speechmos runs Microsoft's ONNX models from its own wheel (offline); clips
    shorter than 9 s are looped to 9 s by speechmos, as in the DNS challenge.
    """
    from speechmos import dnsmos as _dnsmos

    x = np.clip(resample(np.asarray(wave, np.float32), sample_rate, PESQ_RATE), -1.0, 1.0)
    if not np.any(x):
        return DNSMOSScore(float("nan"), float("nan"), float("nan"))
    out = _dnsmos.run(x, PESQ_RATE)
    return DNSMOSScore(
        ovrl=float(out["ovrl_mos"]), sig=float(out["sig_mos"]), bak=float(out["bak_mos"])
    )


def reference_f0(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """Harvest F0 per 4 ms frame `[T // hop]`, mains hum notched out first (so a
    recording's hum is not scored as its voice); computed once per reference and reused."""
    from speechvq.audio.f0 import extract_f0

    hop = max(1, int(round(F0_HOP_S * sample_rate)))
    return extract_f0(
        np.asarray(wave, np.float32), sample_rate, hop, method="harvest", hum_notch=True
    )


def f0_scores(
    reference: np.ndarray, test: np.ndarray, sample_rate: int, ref_f0: np.ndarray | None = None
) -> F0Scores:
    """F0 match and voicing agreement of aligned signals (harvest on both).

    Pass `ref_f0 = reference_f0(reference, sr)` to reuse the reference's contour
    across systems; it must come from the same (aligned) reference samples.
    """
    from speechvq.audio.f0 import f0_match, voicing_agreement

    ref = reference_f0(reference, sample_rate) if ref_f0 is None else ref_f0
    tst = reference_f0(test, sample_rate)
    return F0Scores(f0_match=f0_match(ref, tst), voicing=voicing_agreement(ref, tst))
