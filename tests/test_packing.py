"""`speechvq pack` / `unpack`: a packed subset keeps every speaker and its samples bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from speechvq.data.corpus import PreparedCorpus
from speechvq.data.packing import PackConfig, pack_corpus, unpack_corpus
from speechvq.errors import SpeechVQError
from tests.conftest import make_prepared_corpus


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    # alice and bob, 6 synthetic 1 s utterances each, 2 of each held out
    return make_prepared_corpus(tmp_path_factory.mktemp("pack"), utterances=6, heldout=0.34)


def find(haystack: np.ndarray, needle: np.ndarray, step: int) -> int | None:
    """The first multiple of `step` where `needle` lies in `haystack`, or None."""
    for start in range(0, len(haystack) - len(needle) + 1, step):
        if np.array_equal(haystack[start : start + len(needle)], needle):
            return start
    return None


def test_a_small_pack_keeps_every_speaker_and_cuts_exactly(prepared, tmp_path):
    cfg = PackConfig(minutes=0.001, valid_minutes=0.001, max_utterance_seconds=0.5, seed=3)
    summary = pack_corpus(prepared, tmp_path / "packed", cfg)
    source = PreparedCorpus(prepared)
    packed = unpack_corpus(tmp_path / "packed", tmp_path / "unpacked")
    assert packed.speakers == source.speakers == ["alice", "bob"]
    for split in ("train", "valid"):  # the first round only: one cut per speaker
        assert packed.speakers_in(split) == source.speakers_in(split)
        assert len(packed.utterances(split)) == 2
        assert summary.utterances[split] == 2
    by_id = {u.id: u for u in source.utterances()}
    hop = source.hop_length
    for u in packed.utterances():
        whole = by_id[u.id]
        assert u.split == whole.split and u.speaker == whole.speaker
        assert u.length == 8000  # 0.5 s, hop-aligned
        start = find(source.audio(whole), packed.audio(u), hop)
        assert start is not None
        np.testing.assert_array_equal(
            packed.f0(u), source.f0(whole)[start // hop : (start + u.length) // hop]
        )


def test_a_pack_of_everything_unpacks_to_the_same_corpus(prepared, tmp_path):
    cfg = PackConfig(minutes=10, valid_minutes=10, max_utterance_seconds=0)
    pack_corpus(prepared, tmp_path / "packed", cfg)
    source = PreparedCorpus(prepared)
    packed = unpack_corpus(tmp_path / "packed", tmp_path / "unpacked")
    assert [(u.id, u.split) for u in packed.utterances()] == [
        (u.id, u.split) for u in source.utterances()
    ]
    for a, b in zip(source.utterances(), packed.utterances(), strict=True):
        np.testing.assert_array_equal(source.audio(a), packed.audio(b))
        np.testing.assert_array_equal(source.f0(a), packed.f0(b))
    assert packed.info["f0_method"] == source.info["f0_method"]
    assert packed.info["unpacked_from"]["pack"]["seed"] == 0


def test_a_packed_folder_is_not_read_as_a_prepared_one(prepared, tmp_path):
    pack_corpus(prepared, tmp_path / "packed")
    with pytest.raises(SpeechVQError, match="unpack it first"):
        PreparedCorpus(tmp_path / "packed")
    with pytest.raises(SpeechVQError, match="already holds a packed corpus"):
        pack_corpus(prepared, tmp_path / "packed")
    with pytest.raises(SpeechVQError, match="not a packed corpus"):
        unpack_corpus(prepared, tmp_path / "unpacked")


def test_pack_and_unpack_commands(prepared, tmp_path):
    from typer.testing import CliRunner

    from speechvq.cli import app

    cli = CliRunner()
    r = cli.invoke(app, ["pack", str(prepared), str(tmp_path / "p"), "--minutes", "0.02"])
    assert r.exit_code == 0, r.output
    assert "2 speakers" in r.output and "MB" in r.output
    r = cli.invoke(app, ["unpack", str(tmp_path / "p"), str(tmp_path / "u")])
    assert r.exit_code == 0, r.output
    assert "2 speakers" in r.output
    assert PreparedCorpus(tmp_path / "u").speakers == ["alice", "bob"]
