"""`tomoloop labelstudio up|down|status` against a real Label Studio server."""

import json
import os
import stat

import pytest
from label_studio_sdk import LabelStudio
from typer.testing import CliRunner

from tomoloop.adapters.labelstudio_server import (
    LabelStudioServerError,
    label_studio_credentials,
)
from tomoloop.cli import app
from tomoloop.config import Settings

pytestmark = pytest.mark.integration


def test_the_local_server_is_healthy_and_its_token_works(label_studio, monkeypatch):
    info = label_studio.status()
    assert info.running and info.url.startswith("http://127.0.0.1:")
    assert label_studio.up().pid == info.pid  # idempotent: no second server

    monkeypatch.setenv("TOMOLOOP_HOME", str(label_studio.root.parent))
    monkeypatch.delenv("TOMOLOOP_LABEL_STUDIO_URL", raising=False)
    url, token = label_studio_credentials(Settings())
    client = LabelStudio(base_url=url, api_key=token)
    project = client.projects.create(title="tomoloop smoke")
    assert project.id in [p.id for p in client.projects.list()]
    client.projects.delete(id=project.id)

    mode = stat.S_IMODE(os.stat(label_studio.state_file).st_mode)
    assert mode == 0o600  # the token file is private
    status = CliRunner().invoke(app, ["labelstudio", "status", "--json"])
    document = json.loads(status.stdout)
    assert document["running"] and document["url"] == url
    assert token not in status.stdout


def test_down_stops_and_up_restarts_with_the_same_token_and_projects(label_studio, monkeypatch):
    url, token = label_studio.credentials()
    kept = LabelStudio(base_url=url, api_key=token).projects.create(title="survives a restart")
    pid = label_studio.status().pid
    monkeypatch.setenv("TOMOLOOP_HOME", str(label_studio.root.parent))
    down = CliRunner().invoke(app, ["labelstudio", "down", "--json"])
    assert down.exit_code == 0, down.output
    assert json.loads(down.stdout) | {"stopped": pid, "running": False} == json.loads(down.stdout)
    assert not label_studio.status().running
    again = CliRunner().invoke(app, ["labelstudio", "down"])
    assert again.exit_code == 0 and "Label Studio was not running" in again.stdout
    info = label_studio.up()
    assert info.running and label_studio.credentials()[1] == token
    client = LabelStudio(base_url=info.url, api_key=token)
    assert kept.id in [p.id for p in client.projects.list()]  # the token works, data is kept
    client.projects.delete(id=kept.id)


def test_credentials_come_from_the_environment_first(tmp_path, monkeypatch):
    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path))
    monkeypatch.delenv("TOMOLOOP_LABEL_STUDIO_URL", raising=False)
    with pytest.raises(LabelStudioServerError, match="labelstudio up"):
        label_studio_credentials(Settings())
    monkeypatch.setenv("TOMOLOOP_LABEL_STUDIO_URL", "https://ls.example.org/")
    with pytest.raises(LabelStudioServerError, match="TOKEN is not"):
        label_studio_credentials(Settings())
    monkeypatch.setenv("TOMOLOOP_LABEL_STUDIO_TOKEN", "abc123")
    assert label_studio_credentials(Settings()) == ("https://ls.example.org", "abc123")
    assert "abc123" not in repr(Settings())


@pytest.mark.usefixtures("prefect_harness")
def test_the_token_can_come_from_a_prefect_secret_block(tmp_path, monkeypatch):
    from prefect.blocks.system import Secret

    Secret(value="from-the-block").save("tomoloop-ls-token-test", overwrite=True)
    monkeypatch.setenv("TOMOLOOP_HOME", str(tmp_path))
    monkeypatch.delenv("TOMOLOOP_LABEL_STUDIO_TOKEN", raising=False)
    monkeypatch.setenv("TOMOLOOP_LABEL_STUDIO_URL", "https://ls.example.org")
    monkeypatch.setenv("TOMOLOOP_LABEL_STUDIO_TOKEN_BLOCK", "tomoloop-ls-token-test")
    assert label_studio_credentials(Settings()) == ("https://ls.example.org", "from-the-block")
    assert "from-the-block" not in repr(Settings())
    monkeypatch.setenv("TOMOLOOP_LABEL_STUDIO_TOKEN_BLOCK", "no-such-block")
    with pytest.raises(LabelStudioServerError, match="'no-such-block' cannot be read"):
        label_studio_credentials(Settings())
