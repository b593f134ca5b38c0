"""The training policy, pinned once over made-up histories (no framework, no data)."""

from __future__ import annotations

import math

import pytest

from models import policy
from models.policy import EpochResult
from utils.core.config import TrainConfig, config_from_dict


def _h(*rows) -> list[EpochResult]:
    """History from (val_top1, val_loss) pairs, epochs numbered from 1."""
    return [EpochResult(i + 1, top1, loss) for i, (top1, loss) in enumerate(rows)]


def test_best_epoch_is_the_highest_val_top1_ties_go_to_the_lower_loss_then_the_earlier_epoch():
    assert policy.best_epoch(_h((0.5, 1.0), (0.7, 1.2), (0.6, 0.1))).epoch == 2
    assert policy.best_epoch(_h((0.7, 1.0), (0.7, 0.8), (0.7, 0.9))).epoch == 2  # tie on top-1: lower loss
    assert policy.best_epoch(_h((0.7, 0.8), (0.7, 0.8))).epoch == 1  # full tie: the earlier epoch
    assert policy.best_epoch(_h((math.nan, 0.1), (0.2, 5.0))).epoch == 2  # NaN never wins
    assert policy.best_epoch(_h((math.nan, 0.1))) is None
    # a NaN loss with a real top-1 still counts, but loses a top-1 tie against a finite loss
    assert policy.best_epoch(_h((0.5, math.nan), (0.5, 2.0))).epoch == 2


def test_epochs_without_gain_and_early_stop():
    history = _h((0.5, 1.0), (0.6, 1.0), (0.6, 1.1), (0.4, 1.0))
    assert policy.epochs_without_gain(history) == 2
    assert not policy.should_stop(TrainConfig(early_stop=3), history)
    assert policy.should_stop(TrainConfig(early_stop=2), history)
    assert not policy.should_stop(TrainConfig(early_stop=0), history)  # off


def test_cosine_lr_is_closed_form_and_follows_a_raised_epoch_count():
    t = TrainConfig(lr=1.0, schedule="cosine", epochs=4)
    assert [policy.epoch_lr(t, e, []) for e in range(4)] == pytest.approx([1.0, 0.853553, 0.5, 0.146447], abs=1e-6)
    # A run resumed with more epochs continues on the longer schedule, not at the old end (0).
    longer = TrainConfig(lr=1.0, schedule="cosine", epochs=8)
    assert policy.epoch_lr(longer, 4, []) == pytest.approx(0.5)
    assert policy.epoch_lr(TrainConfig(lr=0.3, schedule="none"), 7, []) == 0.3


def test_warmup_rises_linearly_then_hands_over_to_the_schedule():
    t = TrainConfig(lr=1.0, schedule="none", epochs=10, warmup_epochs=3)
    assert [policy.epoch_lr(t, e, []) for e in range(5)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    cosine = TrainConfig(lr=1.0, schedule="cosine", epochs=4, warmup_epochs=1)
    assert [policy.epoch_lr(cosine, e, []) for e in range(3)] == pytest.approx([0.5, 0.853553, 0.5], abs=1e-6)
    assert policy.epoch_lr(TrainConfig(lr=0.3, schedule="none"), 0, []) == 0.3  # 0: no warm-up
    with pytest.raises(ValueError, match="warmup_epochs"):
        TrainConfig(warmup_epochs=-1)


def test_plateau_halves_after_the_third_epoch_without_a_new_best():
    t = TrainConfig(lr=1.0, schedule="plateau", epochs=20)
    # best at epoch 1, then epochs 2, 3, 4 bring no gain: epoch 5 (index 4) runs at half.
    history = _h((0.5, 1.0), (0.5, 1.0), (0.4, 1.0), (0.3, 1.0), (0.2, 1.0), (0.2, 1.0), (0.2, 1.0), (0.9, 0.1))
    lrs = [policy.epoch_lr(t, e, history) for e in range(len(history) + 1)]
    assert lrs == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]
    # A resume recomputes the same rates from history.csv alone.
    assert policy.epoch_lr(t, 7, history[:7]) == 0.25
    # A new best resets the count: epoch 9 (index 8) follows a gain.
    assert policy.epoch_lr(t, 9, history + _h((0.1, 1.0))[:1]) == 0.25


def test_weight_decay_applies_to_kernels_only():
    assert policy.decays((3, 3, 3, 16, 32)) and policy.decays((64, 10))
    assert not policy.decays((32,)) and not policy.decays(())


def test_optimizer_settings_are_one_table_for_both_engines():
    rms = policy.optimizer_settings(TrainConfig(optimizer="rmsprop", lr=1e-3, momentum=0.9, clipnorm=1.0))
    assert rms == {"kind": "rmsprop", "lr": 1e-3, "rho": 0.9, "epsilon": 1.0, "momentum": 0.9,
                   "weight_decay": 0.0, "clipnorm": 1.0}  # fmt: skip
    assert policy.optimizer_settings(TrainConfig(optimizer="adamw"))["kind"] == "adam"  # decay is always decoupled
    assert "momentum" not in policy.optimizer_settings(TrainConfig(optimizer="adam"))


def _cfg(**train):
    return config_from_dict({"model": {"name": "x3d_xs"}, "data": {"root": "/a/b/wlasl100_224"}, "train": train,
                             "run_id": "r", "results": "/somewhere"})  # fmt: skip


def test_fingerprint_names_what_changed_and_allows_more_epochs():
    base = policy.fingerprint(_cfg(epochs=10))
    assert policy.fingerprint_diff(base, policy.fingerprint(_cfg(epochs=30))) == []
    moved = config_from_dict({"model": {"name": "x3d_xs"}, "data": {"root": "/elsewhere/wlasl100_224"},
                              "train": {"epochs": 10}, "run_id": "r", "results": "/other"})  # fmt: skip
    assert policy.fingerprint_diff(base, policy.fingerprint(moved)) == []  # the same store, moved
    diff = policy.fingerprint_diff(base, policy.fingerprint(_cfg(epochs=10, lr=0.1, optimizer="sgd", schedule="plateau")))
    assert [d.split(":")[0] for d in diff] == ["train.lr", "train.optimizer", "train.schedule"]


def test_a_setting_added_later_counts_as_its_default_when_an_older_run_resumes():
    current = policy.fingerprint(_cfg(epochs=10))
    older = {k: v for k, v in current.items() if k not in ("train.clipnorm", "model.unfreeze_last")}
    assert policy.fingerprint_diff(older, current) == []
    assert policy.fingerprint_diff(older, policy.fingerprint(_cfg(epochs=10, clipnorm=1.0))) == [
        "train.clipnorm: None -> 1.0"
    ]


def test_a_run_from_before_warm_up_existed_resumes_with_no_warm_up():
    # warmup_epochs' code default is None ("the model's own"), but a run checkpointed before the
    # setting existed trained without warm-up, and resolve gives most models 0: it must resume.
    current = policy.fingerprint(_cfg(epochs=10, warmup_epochs=0))
    older = {k: v for k, v in current.items() if k != "train.warmup_epochs"}
    assert policy.fingerprint_diff(older, current) == []
    # A model that now warms up by default (pose_transformer: 5) changed what the old run did: named.
    assert policy.fingerprint_diff(older, policy.fingerprint(_cfg(epochs=10, warmup_epochs=5))) == [
        "train.warmup_epochs: 0 -> 5"
    ]
