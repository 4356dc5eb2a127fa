"""The HTTP app's webhook guard, without servers (FastAPI's test client)."""

import base64

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from tomoloop.adapters.http import basic_password, check_exposure, create_app, task_data
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


@given(
    user=st.text(st.characters(blacklist_characters=":", blacklist_categories=["Cs"])),
    password=st.text(st.characters(blacklist_categories=["Cs"])),
)
def test_the_basic_auth_password_comes_back_exactly(user, password):
    header = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    assert basic_password(header) == password


@pytest.mark.parametrize(
    "header", [None, "", "Bearer abc", "Basic", "Basic !!!", "Basic " + "bm9jb2xvbg=="]
)
def test_a_header_without_a_basic_password_has_none(header):
    assert basic_password(header) is None  # the last one is "nocolon": no password part


@pytest.mark.parametrize(
    "body", [{}, {"tasks": {}}, {"tasks": [1]}, {"tasks": [{"id": 1}]}, {"tasks": [{"data": []}]}]
)
def test_a_predict_body_without_tasks_and_their_data_is_refused(body):
    with pytest.raises(ValueError, match=r'expected \{"tasks"'):
        task_data(body)


def _backend_app(tmp_path, token: str | None = None) -> TestClient:
    """The app as ``tomoloop serve-api`` builds it, over an empty migrated registry."""
    import torch

    from tomoloop.db.engine import make_engine, upgrade
    from tomoloop.services import ChampionBackend, Services

    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    upgrade(make_engine(url))
    settings = Settings(database_url=url, api_token=token, home=tmp_path)
    backend = ChampionBackend(Services.from_settings(settings), torch.device("cpu"))
    return TestClient(create_app(settings, predictions=backend, on_train=print))


def test_the_ml_backend_answers_label_studio_and_refuses_what_it_cannot_serve(tmp_path):
    client = _backend_app(tmp_path)
    assert client.get("/ml/nmc/health").json()["status"] == "UP"
    for path in ("/ml/nmc/setup", "/ml/nmc/train"):
        missing = client.post(path, json={})
        assert (
            missing.status_code == 404 and "no dataset" in missing.text and "'nmc'" in missing.text
        )
    malformed = client.post("/ml/nmc/predict", json={"tasks": "all"})
    assert malformed.status_code == 422 and "/predict" in malformed.text
    other = client.post("/ml/nmc/webhook", json={"action": "ANNOTATION_CREATED"})
    assert other.status_code == 201 and other.json()["status"] == "ignored"


def test_the_ml_backend_needs_the_token_as_basic_auth_password_when_one_is_set(tmp_path):
    client = _backend_app(tmp_path, token="t0ken")
    assert client.get("/ml/nmc/health").status_code == 401
    wrong = base64.b64encode(b"tomoloop:t0ke").decode()
    assert (
        client.get("/ml/nmc/health", headers={"Authorization": f"Basic {wrong}"}).status_code == 401
    )
    right = base64.b64encode(b"tomoloop:t0ken").decode()
    assert (
        client.get("/ml/nmc/health", headers={"Authorization": f"Basic {right}"}).status_code == 200
    )
    assert (
        client.get("/ml/nmc/health", headers={"Authorization": "Bearer t0ken"}).status_code == 200
    )
