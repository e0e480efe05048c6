"""The shipped model on the demo input: codes and audio bit-identical to the stored reference.

`tests/data/demo_reference.npz` holds the codes of `examples/demo.wav` and
their decode as p226 with seed 0, on one thread (other thread counts sum in
another order). A refactoring must leave both unchanged; a deliberate change
of the model or of synthesis rewrites the file (see its docstring in git).
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


def test_shipped_model_is_bit_identical_on_the_demo_input(one_thread):
    reference = np.load(REPO / "tests" / "data" / "demo_reference.npz")
    model = speechvq.load(None)  # the shipped file, sha256-checked
    wave, sr = load_audio(REPO / "examples" / "demo.wav", model.sample_rate)
    codes = model.encode(wave, sr)
    np.testing.assert_array_equal(codes, reference["codes"])
    out = model.decode(codes, "p226", seed=0)
    assert out.dtype == np.float32 and out.shape == reference["wave"].shape
    assert np.array_equal(out, reference["wave"]), np.abs(out - reference["wave"]).max()
