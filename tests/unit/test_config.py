from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fluxforge.config import DEFAULT_CONFIG_PATH, ConfigError, config_from_dict, load_config


def test_default_config_loads_with_shm_ingestion_and_local_lake() -> None:
    cfg = load_config(DEFAULT_CONFIG_PATH, environ={})
    assert cfg.storage.ingestion.base_dir == "/dev/shm/fluxforge"
    assert cfg.storage.etl_output.backend == "local"
    assert cfg.sources[0].type == "synthetic"


def test_short_form_applies_to_every_layer_with_custom_path_names() -> None:
    cfg = config_from_dict(
        {
            "storage": {
                "backend": "local",
                "base_dir": "./data",
                "paths": {"raw_dir": "ingested", "ready_subdir": "completed"},
            }
        },
        environ={},
    )
    for layer in (cfg.storage.ingestion, cfg.storage.etl_input, cfg.storage.etl_output):
        assert layer.base_dir == "./data"
        assert layer.paths.raw_dir == "ingested"
        assert layer.paths.ready_subdir == "completed"
        assert layer.paths.active_subdir == "active"


def test_hybrid_ingest_local_etl_to_s3() -> None:
    cfg = config_from_dict(
        {
            "storage": {
                "backend": "local",
                "base_dir": "F:/",
                "etl_storage_output": {
                    "backend": "s3",
                    "base_dir": "market-data-vault",
                    "s3": {"bucket": "market-data-vault", "region": "us-east-1"},
                },
            }
        },
        environ={},
    )
    assert cfg.storage.ingestion.backend == "local"
    assert cfg.storage.etl_input.base_dir == "F:/"
    assert cfg.storage.etl_output.backend == "s3"
    assert cfg.storage.etl_output.bucket == "market-data-vault"


def test_all_s3_per_layer_form() -> None:
    layer = {"backend": "s3", "base_dir": "vault", "s3": {"region": "us-east-1"}}
    cfg = config_from_dict(
        {
            "storage": {
                "ingestion_storage": layer,
                "etl_storage_input": layer,
                "etl_storage_output": layer,
            }
        },
        environ={},
    )
    assert {cfg.storage.ingestion.bucket, cfg.storage.etl_output.bucket} == {"vault"}


def test_bad_backend_names_key_value_and_allowed() -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"storage": {"backend": "ftp"}}, environ={})
    text = str(err.value)
    assert "backend" in text and "'ftp'" in text and "'local'" in text and "'s3'" in text


def test_unknown_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match="segment_max_byts"):
        config_from_dict({"ingestion": {"segment_max_byts": 5}}, environ={})


def test_path_name_with_slash_is_rejected() -> None:
    with pytest.raises(ConfigError, match="raw_dir"):
        config_from_dict({"storage": {"paths": {"raw_dir": "../etc"}}}, environ={})


def test_env_override_nested_and_typed() -> None:
    cfg = config_from_dict(
        {},
        environ={
            "FLUXFORGE_INGESTION__SEGMENT_MAX_BYTES": "2048",
            "FLUXFORGE_STORAGE__ETL_STORAGE_OUTPUT__BACKEND": "s3",
            "FLUXFORGE_STORAGE__ETL_STORAGE_OUTPUT__BASE_DIR": "bucket-x",
            "UNRELATED": "1",
        },
    )
    assert cfg.ingestion.segment_max_bytes == 2048
    assert cfg.storage.etl_output.backend == "s3"
    assert cfg.storage.etl_input.backend == "local"


def test_env_override_bad_value_fails_clearly() -> None:
    with pytest.raises(ConfigError, match="segment_max_bytes"):
        config_from_dict({}, environ={"FLUXFORGE_INGESTION__SEGMENT_MAX_BYTES": "lots"})


def test_config_path_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text(yaml.safe_dump({"refinery": {"snapshot_depth": 7}}))
    b.write_text(yaml.safe_dump({"refinery": {"snapshot_depth": 9}}))
    monkeypatch.setenv("FLUXFORGE_CONFIG", str(b))
    assert load_config().refinery.snapshot_depth == 9
    assert load_config(a).refinery.snapshot_depth == 7


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_duplicate_source_names_rejected() -> None:
    src = {"name": "a", "type": "synthetic"}
    with pytest.raises(ConfigError, match="duplicate"):
        config_from_dict({"sources": [src, src]}, environ={})


def test_bad_short_form_backend_is_reported_once_with_file_and_key() -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"storage": {"backend": "ftp"}}, origin="site.yaml", environ={})
    problems = str(err.value).splitlines()[1:]
    assert problems == ["  site.yaml, key storage.backend = 'ftp': Input should be 'local' or 's3'"]


def test_bad_environment_value_is_blamed_on_the_variable_not_the_file() -> None:
    env = {"FLUXFORGE_STORAGE__ETL_STORAGE_OUTPUT__BACKEND": "ftp"}
    with pytest.raises(ConfigError) as err:
        config_from_dict({}, origin="site.yaml", environ=env)
    text = str(err.value)
    assert "environment variable FLUXFORGE_STORAGE__ETL_STORAGE_OUTPUT__BACKEND" in text
    assert "site.yaml" not in text and text.count("'ftp'") == 1


def test_unknown_fluxforge_variable_warns_with_did_you_mean(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {"FLUXFORGE_HOTSTORE__DSN": "postgresql://x", "FLUXFORGE_CAPTURES": "/data"}
    with caplog.at_level("WARNING", logger="fluxforge.config"):
        cfg = config_from_dict({}, environ=env)
    assert cfg.hot_store.dsn is None
    warned = [r.getMessage() for r in caplog.records]
    assert warned == [
        "environment variable FLUXFORGE_HOTSTORE__DSN is not a FluxForge setting; "
        "did you mean FLUXFORGE_HOT_STORE__DSN?"
    ]
