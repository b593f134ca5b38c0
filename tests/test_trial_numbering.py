"""One trial numbering: keras-tuner's own lines name a trial by the id the suite uses everywhere
(run directory ``<study>-trial<id>``, records, best.json), not by a separate count from 1."""

from __future__ import annotations

import re

from tests._tuning_fake import FAMILY, fake_run


def test_keras_tuner_and_the_suite_name_a_trial_alike(tiny_store, tmp_path, monkeypatch, capsys):
    """Found in use: keras-tuner printed "Trial #1" for the trial the suite calls "trial 0"."""
    from utils.tuning.cli import main

    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "fake.log"))
    argv = ["--tuner", "bayesian", "--data", str(tiny_store), "--results", str(tmp_path), "--max-epochs", "1",
            "--max-trials", "3"]  # fmt: skip
    assert main(FAMILY, argv, train_fn=fake_run) == 0
    out = capsys.readouterr().out
    started = re.findall(r"Search: running trial (\S+)", out)
    done = re.findall(r"Trial (\S+) Complete", out)
    runs = sorted(p.name.rpartition("-trial")[2] for p in (tmp_path / "tuning").glob("*/runs/*-trial*"))
    assert sorted(started) == sorted(done) == runs and len(runs) == 3, out
    assert "Trial #" not in out
    best = re.search(r"Best trial (\S+) of study", out).group(1)
    assert best in runs
