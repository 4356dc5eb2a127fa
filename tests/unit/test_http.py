"""The HTTP app's webhook guard, without servers (FastAPI's test client)."""

import pytest
from fastapi.testclient import TestClient

from tomoloop.adapters.http import check_exposure, create_app
from tomoloop.config import Settings
from tomoloop.errors import TomoloopError


@pytest.mark.parametrize("secret", [None, ""])
def test_webhooks_are_off_without_a_secret(tmp_path, secret):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'r.sqlite'}", webhook_secret=secret)
    client = TestClient(create_app(settings))
    answer = client.post("/webhooks/labelstudio", json={"action": "ANNOTATION_CREATED"})
    assert answer.status_code == 503 and "TOMOLOOP_WEBHOOK_SECRET" in answer.text


def test_a_wrong_secret_is_refused_and_other_actions_ignored(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'r.sqlite'}", webhook_secret="k3y")
    client = TestClient(create_app(settings))
    body = {"action": "ANNOTATION_CREATED"}
    assert client.post("/webhooks/labelstudio", json=body).status_code == 401
    wrong = client.post("/webhooks/labelstudio", json=body, headers={"X-Tomoloop-Secret": "k3"})
    assert wrong.status_code == 401
    other = client.post(
        "/webhooks/labelstudio", json={"action": "PROJECT_CREATED"},
        headers={"X-Tomoloop-Secret": "k3y"},
    )  # fmt: skip
    assert other.json()["status"] == "ignored"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.5", "::1", "[::1]", "localhost"])
def test_loopback_is_served_without_a_token(host):
    check_exposure(host, Settings(api_token=None))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "lab.example.org"])
@pytest.mark.parametrize("token", [None, ""])
def test_other_interfaces_need_a_token(host, token):
    with pytest.raises(TomoloopError, match=f"--host {host} .*set TOMOLOOP_API_TOKEN"):
        check_exposure(host, Settings(api_token=token))
    check_exposure(host, Settings(api_token="t0ken"))


@pytest.mark.parametrize("token", [None, ""])
def test_the_registry_api_is_open_without_a_token(tmp_path, token):
    from tomoloop.db.engine import make_engine, upgrade

    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    upgrade(make_engine(url))
    client = TestClient(create_app(Settings(database_url=url, api_token=token)))
    assert client.get("/volumes").json() == []


def test_the_registry_api_needs_the_bearer_token_when_one_is_set(tmp_path):
    from tomoloop.db.engine import make_engine, upgrade

    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    upgrade(make_engine(url))
    client = TestClient(create_app(Settings(database_url=url, api_token="t0ken")))
    for path in ("/volumes", "/datasets", "/models", "/models/1", "/rounds"):
        refused = client.get(path)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert client.get(path, headers={"Authorization": "Bearer t0ke"}).status_code == 401
    assert client.get("/volumes", headers={"Authorization": "Bearer t0ken"}).json() == []
    assert client.get("/models/1", headers={"Authorization": "Bearer t0ken"}).status_code == 404
