"""`--tensorboard`: beside Keras's per-epoch logs, the run's settings and final scores for TensorBoard's HParams
dashboard, written without TensorFlow, read back here as TensorBoard reads them."""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata

from cnnlab.runs import rundir
from conftest import FLOAT32, TINY_DATA, TINY_MODEL, run_cnnlab, run_metrics


def test_hparams_hold_the_runs_settings_and_final_scores(tmp_path, synthetic_archive):
    run_dir = tmp_path / "run"
    done = run_cnnlab("train", "--tensorboard", "--data", synthetic_archive, *TINY_DATA, *TINY_MODEL, *FLOAT32,
                      "--learning-rate", "0.002", "--out", run_dir)
    assert done.returncode == 0, done.stderr
    events = EventAccumulator(str(run_dir / rundir.TENSORBOARD / "hparams"))
    events.Reload()
    content = events.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_START_INFO_TAG]
    session = metadata.parse_session_start_info_plugin_data(content)
    assert session.hparams["train.learning_rate"].number_value == pytest.approx(0.002)
    assert session.hparams["model"].string_value == "cnn"
    assert session.hparams["cnn.conv_blocks"].string_value == "[[8], [16]]"
    assert session.group_name == "run" and session.start_time_secs > 0  # a session per run, named after it
    config = json.loads((run_dir / rundir.CONFIG).read_text())
    assert not [key for key in session.hparams if key.startswith("vgg16.")] and config["vgg16"]  # its own kind only
    metrics = run_metrics(run_dir)
    for name in ("test_accuracy", "test_loss"):
        assert events.Scalars(name)[0].value == pytest.approx(metrics[name], rel=1e-6)
    assert (run_dir / rundir.TENSORBOARD / "train").is_dir()  # Keras's own logs are there too
