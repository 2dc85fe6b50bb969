"""``csrl push`` / ``push_to_hub`` against a stand-in for the Hub API (``HfApi`` methods replaced; no network)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import HfApi, constants

from csrl.cli.main import main
from csrl.errors import CsrlError
from csrl.models.card import MODEL_ID_PLACEHOLDER
from csrl.pipelines.push import push_to_hub


class StandInHub:
    """Records what csrl asks of ``HfApi`` and the files the upload would send."""

    def __init__(self, fail_with: Exception | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.uploaded: dict[str, bytes] = {}
        self.fail_with = fail_with

    def create_repo(self, api: HfApi, repo_id: str, **kwargs: Any) -> str:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        if self.fail_with is not None:
            raise self.fail_with
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, api: HfApi, **kwargs: Any) -> Any:
        self.calls.append(("upload_folder", kwargs))
        root = Path(kwargs["folder_path"])
        self.uploaded = {
            str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".")
        }

        class Info:
            commit_url = f"https://huggingface.co/{kwargs['repo_id']}/commit/abc123"

        return Info()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        hub = self
        monkeypatch.setattr(HfApi, "create_repo", lambda api, repo_id, **kw: hub.create_repo(api, repo_id, **kw))
        monkeypatch.setattr(HfApi, "upload_folder", lambda api, **kw: hub.upload_folder(api, **kw))


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run folder whose best/ is a (miniature) saved model: the files push_to_hub reads."""
    best = tmp_path / "run" / "best"
    (best / "1_Pooling").mkdir(parents=True)
    (best / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "", "type": "x"}]))
    (best / "config.json").write_text("{}")
    (best / "1_Pooling" / "config.json").write_text("{}")
    (best / "model.safetensors").write_bytes(b"weights")
    (best / "README.md").write_text(
        f'---\nbase_model: a/b\n---\nmodel = SentenceTransformer("{MODEL_ID_PLACEHOLDER}")\n'
    )
    return tmp_path / "run"


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def test_push_creates_the_repo_and_uploads_best(run_dir: Path, online: None, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = StandInHub()
    hub.install(monkeypatch)
    res = push_to_hub(run_dir, "me/simcse-tiny", private=True, token="hf_x")
    assert [name for name, _ in hub.calls] == ["create_repo", "upload_folder"]
    create, upload = hub.calls[0][1], hub.calls[1][1]
    assert create["repo_id"] == "me/simcse-tiny" and create["private"] is True and create["exist_ok"] is True
    assert create["token"] == "hf_x" and upload["token"] == "hf_x"
    assert Path(upload["folder_path"]) == run_dir / "best" and upload["repo_id"] == "me/simcse-tiny"
    assert sorted(hub.uploaded) == [
        "1_Pooling/config.json",
        "README.md",
        "config.json",
        "model.safetensors",
        "modules.json",
    ]
    card = hub.uploaded["README.md"].decode()
    assert 'SentenceTransformer("me/simcse-tiny")' in card and MODEL_ID_PLACEHOLDER not in card
    assert res.repo_url == "https://huggingface.co/me/simcse-tiny" and res.commit_url.endswith("/commit/abc123")
    assert res.n_files == 5


def test_cli_push(
    run_dir: Path, online: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = StandInHub()
    hub.install(monkeypatch)
    assert main(["push", str(run_dir / "best"), "--repo-id", "me/m"]) == 0  # a model folder works too
    out = capsys.readouterr().out
    assert "https://huggingface.co/me/m" in out and "commit/abc123" in out
    assert hub.calls[0][1]["private"] is False


def test_offline_is_a_clear_error(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub = StandInHub()
    hub.install(monkeypatch)
    assert main(["push", str(run_dir), "--repo-id", "me/m"]) == 2
    err = capsys.readouterr().err
    assert "offline: HF_HUB_OFFLINE is set" in err and "Traceback" not in err
    assert hub.calls == []


def _network_down() -> Exception:
    import httpx2

    return httpx2.ConnectError("[Errno 101] Network is unreachable")


def _unauthorised() -> Exception:
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    response = httpx2.Response(401, request=httpx2.Request("POST", "https://huggingface.co/api/repos/create"))
    return HfHubHTTPError("401 Client Error: Unauthorized", response=response)


@pytest.mark.parametrize(
    "failure,message",
    [(_network_down, "network unreachable"), (_unauthorised, r"refused to write to me/m \(HTTP 401\)")],
)
def test_hub_failures_are_clear_errors(
    run_dir: Path, online: None, monkeypatch: pytest.MonkeyPatch, failure: Any, message: str
) -> None:
    StandInHub(fail_with=failure()).install(monkeypatch)
    with pytest.raises(CsrlError, match=message):
        push_to_hub(run_dir, "me/m")


@pytest.mark.parametrize("repo_id,message", [("no-namespace", "no namespace"), ("a/b/c", "not a Hub repository id")])
def test_bad_repo_id(run_dir: Path, online: None, repo_id: str, message: str) -> None:
    with pytest.raises(CsrlError, match=message):
        push_to_hub(run_dir, repo_id)


def test_run_without_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["push", str(tmp_path), "--repo-id", "me/m"]) == 2
    assert "holds no saved model" in capsys.readouterr().err
