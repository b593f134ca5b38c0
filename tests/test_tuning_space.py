"""Search spaces, space files, study names and distributed roles (no TensorFlow)."""

from __future__ import annotations

import pytest

import models
from tests._ports import free_port
from utils.core.config import DataConfig, ModelConfig, RunConfig, config_from_dict
from utils.tuning.distributed import ADDRESS_FILE, Role, connect_worker, first_node, resolve_role
from utils.tuning.space import COMMON_SPACE, TARGETS, SpaceError, family_space, load_space_file, trial_config
from utils.tuning.study import Study, check_settings, study_name


def _base() -> RunConfig:
    return RunConfig(model=ModelConfig(name="x3d_s"), data=DataConfig(root="data/wlasl100_224"))


@pytest.mark.parametrize("family", models.registry.families())
def test_family_spaces_cover_the_issue_and_are_valid(family):
    space = family_space(family)
    assert {"lr", "optimizer", "weight_decay", "dropout", "freeze", "batch_size"} <= set(space)
    assert space["lr"]["sampling"] == "log"
    assert "variant" not in space  # only with --tune-variant


def test_variant_only_when_asked():
    space = family_space("movinet", variants=["a0", "a1", "a2"])
    assert space["variant"] == {"kind": "choice", "values": ["a0", "a1", "a2"]}
    with pytest.raises(SpaceError, match="--tune-variant"):
        family_space("movinet", overrides={"variant": ["a0"]})
    with pytest.raises(SpaceError, match="variant.*a9"):
        family_space("movinet", variants=["a0", "a1"], overrides={"variant": ["a0", "a9"]})


def test_space_file_overrides(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("lr: {min: 1.0e-4, max: 1.0e-3, sampling: log}\noptimizer: [adam, sgd]\ndropout: 0.3\n"
                    "batch_size: {values: [2, 4]}\nfreeze: {min: 0, max: 2}\n")
    space = family_space("x3d", overrides=load_space_file(path))
    assert space["lr"] == {"kind": "float", "min": 1e-4, "max": 1e-3, "sampling": "log", "step": None}
    assert space["optimizer"] == {"kind": "choice", "values": ["adam", "sgd"]}
    assert space["dropout"] == {"kind": "fixed", "value": 0.3}
    assert space["batch_size"]["values"] == [2, 4]
    assert space["freeze"]["kind"] == "int" and space["freeze"]["max"] == 2
    assert space["weight_decay"] == COMMON_SPACE["weight_decay"]  # untouched entries stay


@pytest.mark.parametrize(
    "text, match",
    [
        ("learning_rate: [0.1]\n", "unknown hyperparameter 'learning_rate'"),
        ("- lr\n- dropout\n", "expected a mapping"),
        ("lr: {min: 0.1, max: 0.01}\n", "'lr'.*min 0.1 > max 0.01"),
        ("lr: {min: 0.0, max: 0.01, sampling: log}\n", "'lr'.*log sampling needs min > 0"),
        ("lr: {min: 1.0e-4, max: 0.01, sampling: cubic}\n", "'lr'.*'sampling' expected one of 'linear', 'log'"),
        ("lr: {low: 1.0e-4, high: 0.01}\n", r"'lr'.*unknown key\(s\) \['high', 'low'\]"),
        ("optimizer: [adam, adamax]\n", "'optimizer'.*adamax"),
        ("optimizer: {min: 1, max: 2}\n", "'optimizer'.*not a range"),
        ("dropout: 1.5\n", "'dropout'.*1.5"),
        ("batch_size: [4, 8.5]\n", r"'batch_size'.*\[1\] expected a whole number"),
        ("batch_size: []\n", "'batch_size'.*non-empty"),
        ("freeze: [0, 0]\n", "'freeze'.*repeated"),
        ("weight_decay: [fast]\n", "'weight_decay'.*number"),
        ("dropout:\n", "'dropout'.*empty"),
        ("lr: [0.1\n", "not valid YAML"),
    ],
)
def test_bad_space_file_names_the_entry(tmp_path, text, match):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError, match=match):
        family_space("i3d", overrides=load_space_file(path))


def test_missing_space_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_space_file(tmp_path / "nope.yaml")


def test_trial_config_maps_values_onto_the_run_config():
    values = {"lr": 0.003, "optimizer": "sgd", "weight_decay": 1e-4, "dropout": 0.2, "freeze": 2, "batch_size": 4,
              "variant": "m", "tuner/epochs": 3, "tuner/trial_id": "1"}
    cfg = trial_config(_base(), values, "x3d")
    assert (cfg.train.lr, cfg.train.optimizer, cfg.train.weight_decay) == (0.003, "sgd", 1e-4)
    assert (cfg.model.dropout, cfg.model.freeze, cfg.model.name, cfg.data.batch_size) == (0.2, 2, "x3d_m", 4)
    assert set(TARGETS) >= {k for k in values if not k.startswith("tuner/")}
    with pytest.raises(SpaceError, match="unknown hyperparameter 'momentum'"):
        trial_config(_base(), {"momentum": 0.9}, "x3d")


def test_study_name_is_stable_and_settings_must_match(tmp_path):
    def cfg(**top):
        return config_from_dict({"model": {"name": top.pop("name", "x3d_s"), "stream": top.pop("stream", False)},
                                 "data": {"root": top.pop("root", "data/wlasl100_224")}, **top})  # fmt: skip

    assert study_name(cfg(), "bayesian") == "x3d_s-bayesian-wlasl100_224"
    assert study_name(cfg(name="i3d", root="/d/mini store/", dry_run=True), "hyperband") == "i3d-hyperband-mini-store-dryrun"
    assert study_name(cfg(name="movinet_a0", stream=True), "bayesian", family="movinet") == "movinet_stream-bayesian-wlasl100_224"
    study = Study("s", tmp_path)
    check_settings(study, {"tuner": "bayesian", "max_trials": 3, "space": {"lr": 1}})
    check_settings(study, {"tuner": "bayesian", "max_trials": 9, "space": {"lr": 1}})  # extending is fine
    with pytest.raises(ValueError, match="started with space=.*--study NEW_NAME"):
        check_settings(study, {"tuner": "bayesian", "max_trials": 9, "space": {"lr": 2}})


def test_roles_from_env_and_slurm_array():
    env = {"KERASTUNER_TUNER_ID": "tuner2", "KERASTUNER_ORACLE_IP": "10.0.0.5", "KERASTUNER_ORACLE_PORT": "8470"}
    assert resolve_role(env, "s") == Role("tuner2", "10.0.0.5", 8470)
    chief = resolve_role({"SLURM_ARRAY_TASK_ID": "0"}, "study-a")
    worker = resolve_role({"SLURM_ARRAY_TASK_ID": "3"}, "study-a")
    assert chief.is_chief and not worker.is_chief and worker.tuner_id == "tuner3"
    assert chief.port == worker.port and 20000 <= chief.port < 40000 and chief.host is None
    assert resolve_role({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "1"}, "s").is_chief
    with pytest.raises(ValueError, match="KERASTUNER_TUNER_ID"):
        resolve_role({}, "s")
    with pytest.raises(ValueError, match="KERASTUNER_ORACLE_PORT.*'x'"):
        resolve_role({"KERASTUNER_TUNER_ID": "chief", "KERASTUNER_ORACLE_PORT": "x"}, "s")


def test_chief_listens_on_all_interfaces_for_a_host_name(tmp_path):
    import json

    from utils.tuning.distributed import publish_chief

    assert publish_chief(Role("chief", "node07", 8470), tmp_path) == "0.0.0.0"
    assert json.loads((tmp_path / ADDRESS_FILE).read_text())["host"] == "node07"
    assert publish_chief(Role("chief", "127.0.0.1", 8470), tmp_path) == "127.0.0.1"
    assert publish_chief(Role("chief", None, 8470), tmp_path) == "0.0.0.0"
    assert json.loads((tmp_path / ADDRESS_FILE).read_text())["host"] not in ("0.0.0.0", "")


def test_first_node_of_a_slurm_nodelist():
    assert first_node("gpu[03-05,07],cpu1") == "gpu03"
    assert first_node("node7") == "node7"
    assert first_node("a1,b2") == "a1"


def test_worker_that_cannot_reach_the_chief_names_the_address(tmp_path):
    port = free_port()  # nothing listens there
    role = Role("tuner1", "127.0.0.1", port)
    with pytest.raises(ConnectionError, match=f"tuner1 cannot reach the tuning chief at 127.0.0.1:{port}"):
        connect_worker(role, tmp_path, timeout_s=1.0, environ={})
    # No address given and no chief ever published one: says where it looked.
    with pytest.raises(ConnectionError, match=f"no address.*{ADDRESS_FILE}"):
        connect_worker(Role("tuner1", None, port), tmp_path, timeout_s=0.5, environ={})
    # The address the chief published is the one tried.
    (tmp_path / ADDRESS_FILE).write_text(f'{{"host": "127.0.0.1", "port": {port}}}')
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
        connect_worker(Role("tuner1", None, 1), tmp_path, timeout_s=0.5, environ={})
