"""modelsvc.config: loading, the priority of the sources, and every validation error path."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelsvc.config import ENV_PREFIX, Settings, config_files, load_settings
from modelsvc.errors import ConfigError

TRAINING_KEYS = ("batch_size, data_path, early_stopping_patience, epochs, lr, max_failures, min_delta, "
                 "resident_max_bytes, seed, weight_decay")
TOP_KEYS = ("dataset, etl, evaluation, features, hive, mlflow, model, paths, prefect, profile, ray, "
            "scaling, serving, tables, training, warehouse")


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty config dir in a fresh cwd (so no stray .env is read)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs" / "profiles").mkdir(parents=True)
    return tmp_path / "configs"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def error_of(*args, **kwargs) -> str:
    with pytest.raises(ConfigError) as exc:
        load_settings(*args, **kwargs)
    assert exc.value.exit_code == 78
    assert "\n" not in exc.value.message
    return exc.value.message


# -- loading --------------------------------------------------------------------------------------------------

def test_repo_configs_load_and_match_the_defaults_where_they_repeat_them(settings):
    assert settings.warehouse.engine == "duckdb"
    assert settings.features.online_store == "sqlite"
    assert settings.model.hidden_layers == [128, 64]
    assert settings.config_dir is not None
    assert settings.config_dir.name == "configs"
    defaults = Settings()
    assert settings.tables == defaults.tables
    assert settings.paths == defaults.paths


def test_production_profile_of_the_repo_loads(workdir):
    s = load_settings(workdir / "configs", profile="production")
    assert (s.profile, s.warehouse.engine, s.features.online_store, s.scaling.num_workers) == (
        "production", "hive", "redis", 2)


def test_defaults_only_without_a_config_dir(cfg):
    s = load_settings(None)
    assert s.training.lr == 3e-3
    assert s.config_dir is None


def test_files_are_read_base_then_model_params_then_the_others_then_the_profile(cfg):
    write(cfg / "base.yaml", "training: {epochs: 1, lr: 0.1, seed: 1}\n")
    write(cfg / "model_params.yaml", "training: {epochs: 2, lr: 0.2}\n")
    write(cfg / "zz_extra.yaml", "training: {epochs: 3}\n")
    write(cfg / "aa_extra.yaml", "training: {epochs: 4, lr: 0.4}\n")
    write(cfg / "profiles" / "fast.yaml", "training: {epochs: 5}\n")
    assert [p.name for p in config_files(cfg, "fast")] == ["base.yaml", "model_params.yaml", "aa_extra.yaml",
                                                           "zz_extra.yaml", "fast.yaml"]
    s = load_settings(cfg, profile="fast")
    assert (s.training.epochs, s.training.lr, s.training.seed, s.profile) == (5, 0.4, 1, "fast")
    assert load_settings(cfg).training.epochs == 3


def test_nested_sections_merge_key_by_key(cfg):
    write(cfg / "base.yaml", "evaluation: {gate: {min_auc: 0.7}}\n")
    write(cfg / "profiles" / "p.yaml", "evaluation: {gate: {max_brier: 0.2}}\n")
    gate = load_settings(cfg, profile="p").evaluation.gate
    assert (gate.min_auc, gate.max_brier, gate.max_log_loss) == (0.7, 0.2, 0.7)


def test_empty_yaml_file_is_no_settings(cfg):
    write(cfg / "base.yaml", "# nothing yet\n")
    assert load_settings(cfg).training.epochs == 20


# -- priority: CLI overrides > env > .env > YAML > defaults ------------------------------------------------------

def test_priority_of_every_source(cfg, monkeypatch):
    write(cfg / "base.yaml", "training: {lr: 0.1, epochs: 2, seed: 3, batch_size: 64}\n")
    write(Path(".env"), "MODELSVC_TRAINING__EPOCHS=20\nMODELSVC_TRAINING__SEED=30\nMODELSVC_TRAINING__LR=0.3\n")
    monkeypatch.setenv("MODELSVC_TRAINING__SEED", "300")
    monkeypatch.setenv("MODELSVC_TRAINING__LR", "0.03")
    s = load_settings(cfg, training={"lr": 0.5})
    assert s.training.lr == 0.5            # command line beats env
    assert s.training.seed == 300          # env beats .env
    assert s.training.epochs == 20         # .env beats YAML
    assert s.training.batch_size == 64     # YAML beats defaults
    assert s.training.weight_decay == 0.0  # defaults


def test_env_overrides_one_key_and_keeps_the_yaml_siblings(cfg, monkeypatch):
    write(cfg / "base.yaml", "features: {online_store: redis, redis: {host: yaml-host, port: 7000}}\n")
    monkeypatch.setenv("MODELSVC_FEATURES__REDIS__PORT", "7001")
    s = load_settings(cfg)
    assert (s.features.online_store, s.features.redis.host, s.features.redis.port) == ("redis", "yaml-host", 7001)


def test_env_names_are_case_insensitive_and_parse_types(cfg, monkeypatch):
    monkeypatch.setenv("modelsvc_scaling__use_gpu", "False")
    monkeypatch.setenv("MODELSVC_MODEL__HIDDEN_LAYERS", "[32, 16]")
    s = load_settings(cfg)
    assert s.scaling.use_gpu is False
    assert s.model.hidden_layers == [32, 16]


def test_dotenv_file_is_read_and_other_programs_variables_in_it_are_ignored(cfg):
    write(Path(".env"), "OTHER_TOOL_TOKEN=abc\nMODELSVC_WAREHOUSE__ENGINE=hive\nMODELSVC_HIVE__HOST=hs2.internal\n")
    s = load_settings(cfg)
    assert (s.warehouse.engine, s.hive.host) == ("hive", "hs2.internal")


def test_profile_from_the_environment_and_from_dotenv(cfg, monkeypatch):
    write(cfg / "profiles" / "prod.yaml", "warehouse: {engine: hive}\n")
    write(cfg / "profiles" / "other.yaml", "warehouse: {engine: duckdb}\n")
    write(Path(".env"), "MODELSVC_PROFILE=prod\n")
    assert load_settings(cfg).profile == "prod"
    assert load_settings(cfg).warehouse.engine == "hive"
    monkeypatch.setenv("MODELSVC_PROFILE", "other")
    assert load_settings(cfg).profile == "other"
    assert load_settings(cfg, profile="prod").profile == "prod"  # the --profile option wins


def test_mlflow_tracking_uri_fallbacks(cfg, monkeypatch):
    local = load_settings(cfg)
    assert local.tracking_uri() == "sqlite:///" + str(cfg.parent / "data" / "mlflow" / "mlflow.db")
    assert local.artifact_location() == (cfg.parent / "data" / "mlflow" / "artifacts").as_uri()
    write(Path(".env"), "MLFLOW_TRACKING_URI=http://from-dotenv:5000\nRAY_ADDRESS=10.0.0.2:6379\n")
    assert load_settings(cfg).tracking_uri() == "http://from-dotenv:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://from-env:5000")
    s = load_settings(cfg)
    assert s.tracking_uri() == "http://from-env:5000"
    assert s.artifact_location() is None  # the server decides
    write(cfg / "base.yaml", "mlflow: {tracking_uri: 'http://from-yaml:5000'}\n")
    assert load_settings(cfg).tracking_uri() == "http://from-yaml:5000"


def test_ray_address_fallbacks(cfg, monkeypatch):
    assert load_settings(cfg).ray_address() is None
    write(Path(".env"), "RAY_ADDRESS=10.0.0.2:6379\n")
    assert load_settings(cfg).ray_address() == "10.0.0.2:6379"
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert load_settings(cfg).ray_address() == "ray://head:10001"
    monkeypatch.setenv("MODELSVC_RAY__ADDRESS", "auto")
    assert load_settings(cfg).ray_address() == "auto"
    assert load_settings(cfg).masked_dump()["resolved"]["ray_address"] == "auto"


def test_relative_paths_resolve_against_root_and_absolute_ones_stay(cfg, tmp_path):
    write(cfg / "base.yaml", f"paths: {{root: state, mlflow: {tmp_path / 'elsewhere'}}}\n")
    s = load_settings(cfg)
    assert s.paths.resolve("root") == cfg.parent / "state"
    assert s.paths.resolve("warehouse") == cfg.parent / "state" / "warehouse"
    assert s.paths.resolve("mlflow") == tmp_path / "elsewhere"
    assert s.ray_storage_path() == str(cfg.parent / "state" / "ray")


# -- every error path ---------------------------------------------------------------------------------------

def test_missing_config_dir(cfg):
    assert error_of("nowhere") == "config directory 'nowhere' does not exist (pass --config DIR)"


def test_bad_yaml_names_the_file_and_line(cfg):
    path = write(cfg / "base.yaml", "training:\n  lr: [0.1\n")
    assert error_of(cfg).startswith(f"{path}: line 3 is not valid YAML (")


def test_non_mapping_yaml(cfg):
    path = write(cfg / "model_params.yaml", "- lr\n- epochs\n")
    assert error_of(cfg) == f"{path}: expected a mapping of settings at the top level, got list"


def test_yaml_that_is_not_utf8(cfg):
    (cfg / "base.yaml").write_bytes(b"training:\n  lr: \xff\xfe\n")
    assert error_of(cfg) == f"{cfg / 'base.yaml'}: is not UTF-8 text (byte 16)"


def test_unknown_top_level_key_names_file_and_allowed_keys(cfg):
    path = write(cfg / "base.yaml", "trainig: {lr: 0.1}\n")
    assert error_of(cfg) == f"{path}: unknown key 'trainig' (allowed: {TOP_KEYS})"


def test_unknown_nested_key_names_file_field_and_allowed_keys(cfg):
    path = write(cfg / "model_params.yaml", "training: {learning_rate: 0.1}\n")
    assert error_of(cfg) == f"{path}: unknown key 'training.learning_rate' (allowed: {TRAINING_KEYS})"


def test_unknown_key_in_a_profile_names_the_profile_file(cfg):
    write(cfg / "base.yaml", "training: {lr: 0.1}\n")
    prof = write(cfg / "profiles" / "gpu.yaml", "scaling: {gpus: 4}\n")
    assert error_of(cfg, profile="gpu") == (
        f"{prof}: unknown key 'scaling.gpus' (allowed: cpus_per_worker, num_workers, use_gpu)")


def test_bad_literal_names_the_allowed_values(cfg):
    path = write(cfg / "base.yaml", "warehouse: {engine: spark}\n")
    assert error_of(cfg) == f"{path}: warehouse.engine: Input should be 'duckdb' or 'hive' (got 'spark')"
    write(cfg / "base.yaml", "scaling: {use_gpu: sometimes}\n")
    assert error_of(cfg) == f"{path}: scaling.use_gpu: Input should be 'auto', True or False (got 'sometimes')"
    write(cfg / "base.yaml", "features: {online_store: memcached}\n")
    assert error_of(cfg) == (f"{path}: features.online_store: Input should be 'sqlite' or 'redis' "
                             "(got 'memcached')")


def test_out_of_range_and_wrong_type(cfg):
    path = write(cfg / "base.yaml", "hive: {port: 70000}\ntraining: {epochs: many}\n")
    msg = error_of(cfg)
    assert msg == (f"{path}: hive.port: Input should be less than or equal to 65535 (got 70000); "
                   f"{path}: training.epochs: Input should be a valid integer, unable to parse string as an "
                   "integer (got 'many')")


def test_section_given_as_a_scalar(cfg):
    path = write(cfg / "base.yaml", "training: 5\n")
    assert error_of(cfg) == (f"{path}: training: Input should be a valid dictionary or instance of "
                             "TrainingLoopSettings (got 5)")


def test_model_level_validators(cfg):
    path = write(cfg / "base.yaml", "dataset: {split: {validation_fraction: 0.6, test_fraction: 0.5}}\n")
    assert error_of(cfg) == (f"{path}: dataset.split: Value error, validation_fraction + test_fraction "
                             "must be < 1")
    write(cfg / "base.yaml", "dataset: {split: {test_start: '2026-01-20'}}\n")
    assert error_of(cfg).endswith("set both validation_start and test_start, or neither")
    write(cfg / "base.yaml", "model: {hidden_layers: [64, 0]}\n")
    assert error_of(cfg) == f"{path}: model.hidden_layers: Value error, every hidden layer needs at least 1 unit"


def test_identifier_pattern(cfg):
    path = write(cfg / "base.yaml", "tables: {raw_events: 'raw; DROP TABLE x'}\n")
    assert error_of(cfg).startswith(f"{path}: tables.raw_events: String should match pattern ")


def test_missing_profile_lists_the_available_ones(cfg, monkeypatch):
    write(cfg / "profiles" / "production.yaml", "{}\n")
    write(cfg / "profiles" / "staging.yaml", "{}\n")
    assert error_of(cfg, profile="prod") == (
        f"profile 'prod' not found: no {cfg / 'profiles' / 'prod.yaml'} (available: production, staging)")
    monkeypatch.setenv("MODELSVC_PROFILE", "qa")
    assert error_of(cfg).startswith("profile 'qa' not found")


def test_missing_profile_without_a_profiles_folder(cfg):
    (cfg / "profiles").rmdir()
    assert error_of(cfg, profile="x") == f"profile 'x' not found: no {cfg / 'profiles' / 'x.yaml'}"


def test_bad_environment_value_names_the_variable(cfg, monkeypatch):
    write(cfg / "base.yaml", "training: {lr: 0.1}\n")
    monkeypatch.setenv("MODELSVC_TRAINING__LR", "fast")
    assert error_of(cfg) == ("environment MODELSVC_TRAINING__LR: training.lr: Input should be a valid number, "
                             "unable to parse string as a number (got 'fast')")


def test_unknown_environment_variables_are_errors_not_ignored(cfg, monkeypatch):
    monkeypatch.setenv("MODELSVC_TRAINING__LEARNING_RATE", "0.1")
    assert error_of(cfg) == ("environment MODELSVC_TRAINING__LEARNING_RATE: unknown key 'training.learning_rate' "
                             f"(allowed: {TRAINING_KEYS})")
    monkeypatch.delenv("MODELSVC_TRAINING__LEARNING_RATE")
    monkeypatch.setenv("MODELSVC_TRAINING_LR", "0.1")  # one underscore: a typo
    assert error_of(cfg) == f"environment MODELSVC_TRAINING_LR: unknown key 'training_lr' (allowed: {TOP_KEYS})"


def test_unknown_dotenv_variable_is_an_error_naming_the_dotenv_file(cfg):
    write(Path(".env"), "MODELSVC_HIVE__HOSTNAME=x\n")
    assert error_of(cfg).startswith(".env MODELSVC_HIVE__HOSTNAME: unknown key 'hive.hostname' (allowed: ")
    write(Path(".env"), "MODELSVC_WAREHOUSE__ENGINE=oracle\n")
    assert error_of(cfg) == (".env MODELSVC_WAREHOUSE__ENGINE: warehouse.engine: Input should be 'duckdb' "
                             "or 'hive' (got 'oracle')")
    write(Path(".env"), "MODELSVC_TRAINING_LR=0.1\n")
    assert error_of(cfg) == f".env MODELSVC_TRAINING_LR: unknown key 'training_lr' (allowed: {TOP_KEYS})"


def test_a_section_given_as_json_is_blamed_on_its_variable(cfg, monkeypatch):
    write(cfg / "base.yaml", "hive: {port: 10001}\n")
    monkeypatch.setenv("MODELSVC_HIVE", '{"port": "x"}')
    assert error_of(cfg) == ("environment MODELSVC_HIVE: hive.port: Input should be a valid integer, unable to "
                             "parse string as an integer (got 'x')")
    monkeypatch.setenv("MODELSVC_HIVE", '{"port": ')
    assert error_of(cfg).startswith("environment MODELSVC_HIVE: hive: cannot be parsed (")
    monkeypatch.delenv("MODELSVC_HIVE")
    write(Path(".env"), "MODELSVC_HIVE={\"port\": \"y\"}\n")
    assert error_of(cfg).startswith(".env MODELSVC_HIVE: hive.port: Input should be a valid integer")


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity"])
def test_float_settings_must_be_finite(cfg, monkeypatch, value):
    monkeypatch.setenv("MODELSVC_TRAINING__WEIGHT_DECAY", value)
    assert error_of(cfg) == (f"environment MODELSVC_TRAINING__WEIGHT_DECAY: training.weight_decay: Input should "
                             f"be a finite number (got '{value}')")
    monkeypatch.delenv("MODELSVC_TRAINING__WEIGHT_DECAY")
    write(cfg / "base.yaml", "evaluation: {gate: {max_log_loss: .inf}}\n")
    assert error_of(cfg) == (f"{cfg / 'base.yaml'}: evaluation.gate.max_log_loss: Input should be a finite number "
                             "(got inf)")
    assert error_of(cfg, ray={"poll_interval_s": float("nan")}) .startswith(
        "command line: ray.poll_interval_s: Input should be a finite number")


def test_config_dir_that_is_a_file(cfg):
    write(cfg / "file.txt", "x\n")
    assert error_of(cfg / "file.txt") == (f"config directory '{cfg / 'file.txt'}' is a file, not a directory "
                                         "(pass --config DIR)")


def test_a_data_root_that_is_a_file_is_a_config_error_naming_its_source(cfg, monkeypatch):
    write(Path("not-a-folder"), "x\n")
    monkeypatch.setenv("MODELSVC_PATHS__ROOT", "not-a-folder")
    assert error_of(cfg) == (f"environment MODELSVC_PATHS__ROOT: paths.root: '{cfg.parent / 'not-a-folder'}' is "
                             "a file, not a folder")
    monkeypatch.delenv("MODELSVC_PATHS__ROOT")
    write(cfg / "base.yaml", "paths: {root: not-a-folder}\n")
    assert error_of(cfg).startswith(f"{cfg / 'base.yaml'}: paths.root: ")


def test_command_line_overrides_are_validated_too(cfg):
    assert error_of(cfg, training={"lr": 0}) == (
        "command line: training.lr: Input should be greater than 0 (got 0)")
    assert error_of(cfg, training={"epoch": 1}) == (
        f"command line: unknown key 'training.epoch' (allowed: {TRAINING_KEYS})")


def test_patterns_apply_to_command_line_values(cfg):
    assert error_of(cfg, mlflow={"registered_model": "has space"}).startswith(
        "command line: mlflow.registered_model: String should match pattern")


# -- secrets ------------------------------------------------------------------------------------------------

SECRET = "s3cr3t-Pa55"


def test_secrets_are_masked_in_masked_dump(cfg, monkeypatch):
    monkeypatch.setenv("MODELSVC_HIVE__PASSWORD", SECRET)
    monkeypatch.setenv("MODELSVC_FEATURES__REDIS__PASSWORD", SECRET)
    monkeypatch.setenv("MODELSVC_MLFLOW__PASSWORD", SECRET)
    monkeypatch.setenv("MODELSVC_MLFLOW__TRACKING_URI", f"https://ci:{SECRET}@mlflow.internal")
    s = load_settings(cfg)
    assert s.hive.password is not None
    assert s.hive.password.get_secret_value() == SECRET
    assert SECRET in s.features.redis.connection_string()  # what Feast gets
    dump = s.masked_dump()
    assert SECRET not in repr(dump)
    assert dump["hive"]["password"] == "**********"
    assert dump["mlflow"]["tracking_uri"] == "https://ci:**********@mlflow.internal"
    assert dump["resolved"]["mlflow_tracking_uri"] == "https://ci:**********@mlflow.internal"


def test_secrets_never_appear_in_error_messages(cfg, monkeypatch):
    write(cfg / "base.yaml", f"hive: {{password: {{nested: {SECRET}}}}}\n")
    msg = error_of(cfg)
    assert SECRET not in msg
    assert msg.startswith(f"{cfg / 'base.yaml'}: hive.password: ")
    write(cfg / "base.yaml", f"hive: [password, {SECRET}]\n")  # a whole section echoed would leak it
    assert SECRET not in error_of(cfg)
    write(cfg / "base.yaml", "{}\n")
    monkeypatch.setenv("MODELSVC_FEATURES__REDIS", f'{{"password": "{SECRET}", "port": "x"}}')
    msg = error_of(cfg)
    assert SECRET not in msg
    assert "features.redis.port" in msg


@pytest.mark.parametrize("section", ["hive", "features.redis", "mlflow"])
def test_a_password_in_yaml_is_an_error(cfg, section):
    """Secrets come from the environment or .env only (docs/configuration.md)."""
    nested = f"{{password: {SECRET}}}"
    for part in reversed(section.split(".")):
        nested = f"{{{part}: {nested}}}"
    write(cfg / "profiles" / "p.yaml", nested[1:-1] + "\n")
    msg = error_of(cfg, profile="p")
    variable = "MODELSVC_" + section.replace(".", "__").upper() + "__PASSWORD"
    assert msg == (f"{cfg / 'profiles' / 'p.yaml'}: {section}.password: secrets are not read from YAML; set "
                   f"{variable} in the environment or .env")


def test_env_prefix_is_the_documented_one():
    assert ENV_PREFIX == "MODELSVC_"



# -- locations: a local path or a URI (issue 10) ---------------------------------------------------------------
def test_a_uri_root_puts_datasets_and_reports_under_it_and_local_folders_stay_local(cfg, monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MODELSVC_PATHS__ROOT", "s3://bucket/modelsvc/")
    monkeypatch.setenv("MODELSVC_PATHS__WAREHOUSE", str(tmp_path / "wh"))
    monkeypatch.setenv("MODELSVC_PATHS__STATE", str(tmp_path / "state"))
    s = load_settings(cfg)
    assert s.paths.location("root") == "s3://bucket/modelsvc/"
    assert s.paths.location("datasets") == "s3://bucket/modelsvc/datasets"
    assert s.paths.location("reports") == "s3://bucket/modelsvc/reports"
    assert s.ray_storage_path() == "s3://bucket/modelsvc/ray"
    assert s.paths.resolve("warehouse") == tmp_path / "wh"
    assert s.paths.resolve("state") == tmp_path / "state"
    resolved = s.masked_dump()["resolved"]
    assert resolved["datasets"] == "s3://bucket/modelsvc/datasets"
    assert resolved["mlflow_tracking_uri"].startswith("(not usable: paths.mlflow must be a local folder")
    monkeypatch.delenv("MODELSVC_PATHS__STATE")
    assert load_settings(cfg).masked_dump()["resolved"]["state"].startswith(
        "(not usable: paths.state must be a local folder")


def test_each_location_may_be_its_own_uri_or_absolute_path(cfg, tmp_path):
    write(cfg / "base.yaml", f"paths: {{root: state, datasets: 'gs://data/ds', reports: '{tmp_path / 'rep'}'}}\n")
    s = load_settings(cfg)
    assert s.paths.location("datasets") == "gs://data/ds"
    assert s.paths.location("reports") == str(tmp_path / "rep")
    assert s.paths.location("state") == str(cfg.parent / "state")  # the root by default: today's layout
    assert s.paths.resolve("reports") == tmp_path / "rep"
    with pytest.raises(ConfigError, match=r"^paths.datasets is a URI \(gs://data/ds\); this needs a local folder$"):
        s.paths.resolve("datasets")


def test_a_file_uri_root_is_a_local_folder(cfg, tmp_path):
    write(cfg / "base.yaml", f"paths: {{root: 'file://{tmp_path / 'r'}'}}\n")
    s = load_settings(cfg)
    assert s.paths.resolve("warehouse") == tmp_path / "r" / "warehouse"
    assert s.paths.resolve("state") == tmp_path / "r"


@pytest.mark.parametrize(("name", "setting_hint"), [
    ("warehouse", "set it to an absolute path, or use warehouse.engine: hive"),
    ("mlflow", "set it to an absolute path, or set mlflow.tracking_uri (MLFLOW_TRACKING_URI) to a tracking server"),
    ("feast", "set it to an absolute path, or use features.online_store: redis"),
    ("state", "set it to an absolute path (the run lock and command logs; e.g. "
              "MODELSVC_PATHS__STATE=/var/lib/modelsvc)"),
    ("ray", "set it to an absolute path"),
])
def test_what_needs_a_local_disk_under_a_uri_root_is_one_line_exit_78_naming_the_setting(cfg, monkeypatch, name,
                                                                                           setting_hint):
    monkeypatch.setenv("MODELSVC_PATHS__ROOT", "s3://bucket/p")
    s = load_settings(cfg)  # loading succeeds: only a command that needs the folder fails
    with pytest.raises(ConfigError) as info:
        s.paths.resolve(name)
    assert info.value.exit_code == 78
    assert info.value.message == (f"paths.{name} must be a local folder when paths.root is a URI (s3://bucket/p); "
                                  f"{setting_hint}")


def test_the_local_stores_under_a_uri_root_fail_where_they_are_used(cfg, monkeypatch):
    from modelsvc.runlock import lock_path

    monkeypatch.setenv("MODELSVC_PATHS__ROOT", "s3://bucket/p")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    s = load_settings(cfg)
    with pytest.raises(ConfigError, match=r"^paths.mlflow must be a local folder"):
        s.tracking_uri()
    with pytest.raises(ConfigError, match=r"^paths.state must be a local folder"):
        lock_path(s)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert load_settings(cfg).tracking_uri() == "http://mlflow:5000"


def test_credentials_in_a_location_uri_are_never_shown(cfg, monkeypatch, tmp_path):
    monkeypatch.setenv("MODELSVC_PATHS__ROOT", "s3://AKIA:hunter2@bucket/p")
    monkeypatch.setenv("MODELSVC_PATHS__STATE", str(tmp_path))
    s = load_settings(cfg)
    assert "hunter2" not in str(s.masked_dump())
    with pytest.raises(ConfigError) as info:
        s.paths.resolve("warehouse")
    assert "hunter2" not in info.value.message
    assert "AKIA" not in info.value.message


@pytest.mark.parametrize(("value", "message"), [
    ("ftp://host/x", "environment MODELSVC_PATHS__DATASETS: paths.datasets: Value error, unsupported URI scheme "
                     "'ftp://' in ftp://host/x (use a local path, file://, s3://, gs:// or hdfs://) (got 'ftp://host/x')"),
    ("s3:///nobucket", "environment MODELSVC_PATHS__DATASETS: paths.datasets: Value error, s3:///nobucket names no "
                       "bucket or host (got 's3:///nobucket')"),
])
def test_a_bad_location_is_a_config_error_naming_its_source(cfg, monkeypatch, value, message):
    monkeypatch.setenv("MODELSVC_PATHS__DATASETS", value)
    assert error_of(cfg) == message


@pytest.mark.parametrize(("variable", "setting"), [
    ("MODELSVC_RAY__STORAGE_PATH", "ray.storage_path"),
    ("MODELSVC_FEATURES__REGISTRY", "features.registry"),
])
def test_a_bad_ray_storage_or_registry_location_is_a_config_error_at_load(cfg, monkeypatch, variable, setting):
    """Checked when the settings load (78 naming the source), not as a traceback when `run` first reads there."""
    monkeypatch.setenv(variable, "ftp://host/x")
    message = error_of(cfg)
    assert message.startswith(f"environment {variable}: {setting}: Value error, unsupported URI scheme 'ftp://'")
