"""Files of earlier versions: the shipped `small`'s codes and audio on the demo input,
bit-identical to the stored reference, and an `.svq` written by 0.1.0.

`tests/data/demo_reference.npz` holds the codes of `examples/demo.wav` and
their decode as p226 with seed 0, on one thread (other thread counts sum in
another order). A refactoring must leave the codes unchanged and the audio
within float rounding; a deliberate change of the model or of synthesis
rewrites the file (see its docstring in git).
"""

from pathlib import Path

import numpy as np
import pytest
import torch

import speechvq
from speechvq.audio.io import load_audio

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_shipped_model_is_unchanged_on_the_demo_input(one_thread):
    reference = np.load(REPO / "tests" / "data" / "demo_reference.npz")
    model = speechvq.load("small")  # the shipped file, sha256-checked (the default up to 0.11)
    wave, sr = load_audio(REPO / "examples" / "demo.wav", model.sample_rate)
    codes = model.encode(wave, sr)
    np.testing.assert_array_equal(codes, reference["codes"])
    out = model.decode(codes, "p226", seed=0)
    assert out.dtype == np.float32 and out.shape == reference["wave"].shape
    # Bit-identical on the machine that wrote the file, but torch's CPU kernels round
    # differently on another instruction set (seen: 1.6e-5 at most on an AMD EPYC
    # with AVX-512), so within 1e-4, -76 dB of the 0.65 peak.
    np.testing.assert_allclose(out, reference["wave"], rtol=0, atol=1e-4)


def test_an_svq_file_written_by_0_1_0_still_decodes(one_thread):
    """`speechvq compress` of 0.1.0 (the first second of the demo, prior-coded as p225)."""
    from speechvq.codec.bitstream import read_svq
    from speechvq.inference.compression import (
        decompress,
        entropy_source,
        model_hash_of,
        unpack_codes,
    )

    data = REPO / "tests" / "data"
    model = speechvq.load("small")
    svq = read_svq(data / "demo_1s_v0.1.0.svq", expected_model_hash=model_hash_of(model))
    assert (svq.header.entropy_model, svq.header.speaker) == ("prior", "p225")
    codes = unpack_codes(svq, entropy_source(model, "prior", svq.header.speaker))
    np.testing.assert_array_equal(codes, np.load(data / "demo_1s_v0.1.0_codes.npy"))
    assert decompress(model, data / "demo_1s_v0.1.0.svq", seed=0).shape == (16000,)
