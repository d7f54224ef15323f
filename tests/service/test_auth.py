"""Tokens, roles and the refusal to start without tokens outside development mode."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.core.security import DEV_PRINCIPAL, authenticate, hash_token, new_token
from service.main import create_app
from worker._exceptions import SettingsError
from worker.settings import Role, Settings, parse_tokens

from .test_api_videos import upload


def test_new_token_entry_round_trips():
    token, entry = new_token("nurse-station", Role.viewer)
    assert token.startswith("atcon_") and len(token) > 40
    assert token not in str(entry) and entry.sha256 == hash_token(token)
    assert parse_tokens(str(entry)) == [entry]
    settings = Settings(api_tokens=str(entry))
    principal = authenticate(token, settings)
    assert principal is not None and (principal.name, principal.role) == ("nurse-station", "viewer")
    assert authenticate(token + "x", settings) is None
    assert authenticate(None, settings) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("alice:admin", "name:role:sha256hex"),
        ("alice:root:" + "0" * 64, "role must be one of"),
        ("alice:admin:secret-token", "SHA-256"),
        ("al ice:admin:" + "0" * 64, "name must be"),
        (f"a:admin:{'0' * 64},a:viewer:{'1' * 64}", "twice"),
    ],
)
def test_bad_token_settings_are_refused(value, message):
    with pytest.raises(SettingsError, match=message):
        parse_tokens(value)
    with pytest.raises(ValueError, match=message):
        Settings(api_tokens=value)


def test_no_tokens_outside_development_refuses_to_start(tmp_path):
    with pytest.raises(SettingsError, match="ATCON_API_TOKENS"):
        create_app(Settings(data_dir=tmp_path))


def test_development_mode_without_tokens_makes_everyone_admin(tmp_path):
    settings = Settings(data_dir=tmp_path, dev=True)
    assert authenticate(None, settings) == DEV_PRINCIPAL
    with TestClient(create_app(settings, workers=0)) as client:
        assert client.get("/v1/videos").status_code == 200


def test_development_mode_with_tokens_still_needs_them(tmp_path, token_setting):
    settings = Settings(data_dir=tmp_path, dev=True, api_tokens=token_setting)
    with TestClient(create_app(settings, workers=0)) as client:
        assert client.get("/v1/videos").status_code == 401


ROLE_MATRIX = [
    # (role, upload, read, delete, metrics)
    (Role.viewer, 403, 200, 403, 403),
    (Role.operator, 202, 200, 403, 403),
    (Role.admin, 202, 200, 204, 200),
]


@pytest.mark.parametrize(("role", "up", "read", "delete", "metrics"), ROLE_MATRIX)
def test_role_matrix(client, auth, tokens, role, up, read, delete, metrics):
    headers = {"Authorization": f"Bearer {tokens[role]}"}
    from tests import media

    response = client.post(
        "/v1/videos", files={"file": ("a.mp4", media.video_bytes())}, headers=headers
    )
    assert response.status_code == up
    video_id = upload(client, auth).json()["video_id"]
    assert client.get(f"/v1/videos/{video_id}", headers=headers).status_code == read
    assert client.delete(f"/v1/videos/{video_id}", headers=headers).status_code == delete
    assert client.get("/metrics", headers=headers).status_code == metrics
