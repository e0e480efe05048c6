"""`speechvq log`: a run's log.csv read back by range of steps, and drawn."""

from __future__ import annotations

import math

import pytest

from speechvq.errors import SpeechVQError
from speechvq.training.loop import CsvLog
from speechvq.training.run_log import default_every, format_summary, read_log, summarise


def _log(tmp_path, steps=100, every=10):
    """A log as the trainer writes one: figures every `every` steps, validation at 50
    and 100, a new column from step 30 on (a new header line)."""
    log = CsvLog(tmp_path / "log.csv")
    for step in range(every, steps + 1, every):
        row = {"recon_loss": 1.0 - step / 1000, "grad_norm": 2.0, "lr": 1e-4}
        if step >= 30:
            row["correction_db"] = -math.inf if step == 30 else -40.0
        log.write(step=step, elapsed=step * 0.5, **row)
        if step % 50 == 0:
            log.write(step=step, elapsed=step * 0.5, valid_recon_loss=0.5 + step / 1000)
    return tmp_path


def test_it_reads_a_run_folder_and_averages_each_range_of_steps(tmp_path):
    log = read_log(_log(tmp_path))
    assert log.last_step == 100 and log.log_every == 10
    assert log.default_keys() == ["recon_loss", "correction_db", "grad_norm"]
    rows = summarise(log, 50)
    assert [(r.first, r.last) for r in rows] == [(1, 50), (51, 100)]
    assert rows[0].means["recon_loss"] == pytest.approx(1 - 0.030)  # steps 10..50
    assert rows[1].means["recon_loss"] == pytest.approx(1 - 0.080)
    assert rows[0].means["correction_db"] == -40.0  # the -inf of a zero correction left out
    assert rows[0].held_out == {"valid_recon_loss": 0.55}
    assert rows[1].held_out == {"valid_recon_loss": 0.6}
    table = format_summary(rows, ["recon_loss"]).splitlines()
    assert table[0].split() == ["steps", "recon_loss", "valid_recon_loss"]
    assert table[2].split() == ["51-100", "0.92", "0.6"]


def test_the_default_range_gives_about_twenty_rows_of_whole_log_intervals(tmp_path):
    log = read_log(_log(tmp_path, steps=2000, every=10))
    assert default_every(log) == 100
    assert len(summarise(log, default_every(log))) == 20
    (tmp_path / "short").mkdir()
    log = read_log(_log(tmp_path / "short", steps=70, every=10))
    assert default_every(log) == 10  # not 5: ranges with nothing logged would be empty


def test_a_log_without_the_usual_figures_shows_all_of_its_own(tmp_path):
    log = CsvLog(tmp_path / "log.csv")
    for step in (10, 20):
        log.write(step=step, elapsed=1.0, my_loss=0.5, lr=1e-3)
    assert read_log(tmp_path).default_keys() == ["my_loss"]


def test_unknown_figures_and_missing_logs_are_clear_errors(tmp_path):
    with pytest.raises(SpeechVQError, match="no training log"):
        read_log(tmp_path)
    log = read_log(_log(tmp_path))
    with pytest.raises(SpeechVQError, match=r"no figure disc_loss \(it has: recon_loss"):
        summarise(log, 10, ["disc_loss"])


def test_the_command_prints_the_table_and_draws_the_plot(tmp_path):
    pytest.importorskip("matplotlib")
    from typer.testing import CliRunner

    from speechvq.cli import app

    run = _log(tmp_path)
    plot = tmp_path / "log.png"
    r = CliRunner().invoke(app, ["log", str(run), "--keys", "recon_loss", "--plot", str(plot)])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0].split() == ["steps", "recon_loss", "valid_recon_loss"]
    assert plot.stat().st_size > 10_000
    r = CliRunner().invoke(app, ["log", str(run), "--plot", str(plot)])
    assert r.exit_code == 2 and "already exists" in r.output
