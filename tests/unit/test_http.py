"""The HTTP app's webhook guard, without servers (FastAPI's test client)."""

import pytest
from fastapi.testclient import TestClient

from tomoloop.adapters.http import create_app
from tomoloop.config import Settings


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
