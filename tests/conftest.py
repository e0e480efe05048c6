"""Shared fixtures: tiny models and short synthetic audio (no data files needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def synth_speechlike(seconds: float = 0.5, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A vowel-like harmonic tone with vibrato plus a little noise, float32 `[T]`."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 140 + 20 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    wave = sum(np.sin(k * phase) / k for k in range(1, 8))
    wave = 0.3 * wave / np.abs(wave).max() + 0.01 * rng.standard_normal(t.size)
    return wave.astype(np.float32)


def tiny_train_config(preset: str = "tiny-sf-spk", **kw):
    """A `TrainConfig` for a few steps of a tiny model on `make_prepared_corpus`: batches
    of 2 x 0.25 s, a log line every step, no validation or export on the way."""
    from speechvq.training.vqvae import TrainConfig

    base = dict(batch_size=2, crop_seconds=0.25, log_every=1, valid_every=0, export_every=0)
    return TrainConfig(preset=preset, **{**base, **kw})


def make_prepared_corpus(root, utterances: int, heldout: float):
    """Speakers alice and bob, `utterances` 1 s synthetic utterances each, prepared
    (Dio F0, no trimming) into `root / "prepared"`, which is returned."""
    import soundfile as sf

    from speechvq.data.layouts import Source
    from speechvq.data.prepare import PrepareConfig, prepare_corpus

    src = root / "src"
    for spk, seed in (("alice", 0), ("bob", 1)):
        (src / spk).mkdir(parents=True)
        for i in range(utterances):
            wave = synth_speechlike(1.0, seed=seed * 10 + i)
            sf.write(src / spk / f"{spk}_{i}.wav", wave, 16000)
    config = PrepareConfig(f0_method="dio", workers=1, heldout=heldout, trim=False)
    prepare_corpus([Source(src, "folder")], root / "prepared", config, progress=False)
    return root / "prepared"


def free_port() -> int:
    """A free TCP port on loopback, for a torch.distributed rendezvous."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_gloo_group(rank: int, world: int, port: int) -> None:
    """Set the environment torchrun would give process `rank` of `world` (CPU, 1 thread)."""
    import os

    import torch

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)


def keep_rank_weights(path_of_rank):
    """Make each DDP rank of this process save its model's state when training ends.

    Patches `Distributed.wrap` (in a spawned worker, before `train`) to
    remember the model; returns a function that writes its state dict to
    `path_of_rank(rank)`. DDP's invariant is that every rank then holds
    identical weights, though each trained on other crops.
    """
    from speechvq.training.distributed import Distributed

    seen = []
    wrap = Distributed.wrap

    def remembering_wrap(self, model, device):
        seen.append((self.rank, model))
        return wrap(self, model, device)

    Distributed.wrap = remembering_wrap

    def save() -> None:
        import torch

        (rank, model), *_ = seen
        torch.save(model.state_dict(), path_of_rank(rank))

    return save


def assert_ranks_agree(paths) -> None:
    """The state dicts saved by `keep_rank_weights` are equal, tensor by tensor."""
    import torch

    first, *others = [torch.load(p, weights_only=True) for p in paths]
    assert first and all(set(o) == set(first) for o in others)
    for other in others:
        for name, tensor in first.items():
            assert torch.equal(tensor, other[name]), name


@pytest.fixture
def tiny_model():
    import torch

    import speechvq

    torch.manual_seed(0)
    return speechvq.SpeechVQ(speechvq.ModelConfig.preset("tiny", speakers=["p225", "p226"]))


@pytest.fixture
def wav_file(tmp_path):
    import soundfile as sf

    path = tmp_path / "in.wav"
    sf.write(path, synth_speechlike(0.5), 16000, subtype="PCM_16")
    return path


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA
