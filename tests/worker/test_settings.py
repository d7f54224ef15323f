"""The one settings class: environment prefix, defaults, safety check."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker._exceptions import SettingsError
from worker.settings import Settings, get_settings


def test_reads_the_atcon_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ATCON_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ATCON_REDIS_URL", "redis://example:6379/3")
    monkeypatch.setenv("ATCON_MAX_UPLOAD_BYTES", "1234")
    monkeypatch.setenv("ATCON_CHECKPOINT", "")
    settings = Settings()
    assert settings.data_dir == tmp_path and settings.redis_url == "redis://example:6379/3"
    assert settings.max_upload_bytes == 1234 and settings.checkpoint is None
    assert not settings.embedded


def test_empty_redis_url_is_the_embedded_default(monkeypatch):
    monkeypatch.setenv("ATCON_REDIS_URL", "")
    assert Settings().embedded


def test_get_settings_is_cached():
    get_settings.cache_clear()
    assert get_settings() is get_settings()
    get_settings.cache_clear()


def test_heartbeat_default_and_cap():
    assert Settings(visibility_timeout_s=40).heartbeat_s == 10
    assert Settings(visibility_timeout_s=40, heartbeat_interval_s=30).heartbeat_s == 20


@pytest.mark.parametrize(
    "bad",
    [
        {"max_attempts": 0},
        {"visibility_timeout_s": 0},
        {"retry_backoff_s": 10, "retry_backoff_max_s": 1},
        {"queue_prefix": "a b"},
        {"max_upload_bytes": 0},
    ],
)
def test_invalid_values_are_refused(bad):
    with pytest.raises(ValueError):
        Settings(**bad)


def test_nightly_cameras_and_the_model_cache(monkeypatch):
    monkeypatch.setenv("ATCON_FINETUNE_CAMERAS", " icu-3, ward4.night,icu-3 ,")
    monkeypatch.setenv("ATCON_MODEL_CACHE_SIZE", "5")
    settings = Settings()
    assert settings.finetune_camera_list == ["icu-3", "ward4.night"]
    assert settings.model_cache_size == 5
    assert Settings(finetune_cameras="").finetune_camera_list == []
    with pytest.raises(ValueError, match=r"ATCON_FINETUNE_CAMERAS entry '\.\./x'"):
        Settings(finetune_cameras="icu-3,../x")
    with pytest.raises(ValueError, match="model_cache_size"):
        Settings(model_cache_size=0)


def test_safe_to_serve():
    with pytest.raises(SettingsError, match="atcon token new"):
        Settings().check_safe_to_serve()
    Settings(dev=True).check_safe_to_serve()
    Settings(api_tokens="a:viewer:" + "0" * 64).check_safe_to_serve()


def test_data_dir_default_is_relative():
    assert Settings().data_dir == Path("atcon-data")


@pytest.mark.slow
def test_a_worker_with_detect_compile_scores_with_the_compiled_model(tmp_path, checkpoint):
    from worker.detection.detector import Detector
    from worker.serving.model_cache import ModelRef, _load_detector

    settings = Settings(data_dir=tmp_path / "data", detect_compile=True)
    detector = _load_detector(ModelRef(checkpoint=checkpoint, version="v1"), "v1", settings)
    assert isinstance(detector, Detector) and detector.compiled
    plain = _load_detector(
        ModelRef(checkpoint=checkpoint, version="v1"), "v1", Settings(data_dir=tmp_path)
    )
    assert isinstance(plain, Detector) and not plain.compiled
