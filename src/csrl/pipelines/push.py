"""``csrl push`` as a library function: upload a run's best model to the Hugging Face Hub.

``push_to_hub(run_dir, repo_id)`` uploads ``RUN_DIR/best`` (or a model folder given directly) with
``huggingface_hub.HfApi``: ``create_repo`` (kept if it exists) then ``upload_folder``. The folder's model
card names the repository in its usage snippets before the upload. Offline mode, an unreachable network,
a missing or refused token and a malformed repository id are :class:`~csrl.errors.CsrlError` s that say
what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from csrl.errors import CsrlError
from csrl.models.card import MODEL_ID_PLACEHOLDER, set_model_id
from csrl.utils.io import atomic_write_text

# files of a model folder that are not the model (none today: every file of best/ belongs on the Hub)
IGNORED = [".*", "**/.*"]


@dataclass(frozen=True)
class PushResult:
    folder: Path  # what was uploaded
    repo_id: str
    repo_url: str
    commit_url: str
    n_files: int


def model_folder(run_dir: Path | str) -> Path:
    """``RUN_DIR/best`` of a run, or ``run_dir`` itself when it is a saved model folder."""
    run = Path(run_dir)
    for folder in (run / "best", run):
        if (folder / "modules.json").is_file() and (folder / "config.json").is_file():
            return folder
    if not run.is_dir():
        raise CsrlError(f"run folder {run} does not exist", hint="pass the output_dir of a csrl train run")
    raise CsrlError(
        f"{run} holds no saved model (no best/modules.json)",
        hint="pass a finished run's folder (its best/ model is saved at the first STS-B dev evaluation)",
    )


def _check_repo_id(repo_id: str) -> None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise CsrlError(
            f"--repo-id {repo_id!r} is not a Hub repository id ({str(exc).splitlines()[0]})",
            hint="use NAMESPACE/NAME, e.g. my-user/simcse-minilm",
        ) from None
    if "/" not in repo_id:
        raise CsrlError(
            f"--repo-id {repo_id!r} has no namespace", hint="use NAMESPACE/NAME, e.g. my-user/simcse-minilm"
        )


def _is_network_error(exc: BaseException) -> bool:
    names = {c.__name__ for c in type(exc).__mro__}
    return isinstance(exc, ConnectionError | TimeoutError) or bool(names & {"TransportError", "NetworkError"})


def _hub_error(exc: Exception, repo_id: str) -> CsrlError | None:
    """A user-facing error for what huggingface_hub raised, or None for anything else (a bug: re-raised)."""
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled

    if isinstance(exc, OfflineModeIsEnabled):
        return _offline_error()
    if isinstance(exc, LocalTokenNotFoundError):
        return CsrlError("no Hugging Face token", hint="pass --token, set HF_TOKEN, or run `hf auth login`")
    if isinstance(exc, HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            return CsrlError(
                f"the Hub refused to write to {repo_id} (HTTP {status})",
                hint="use a token with write access to that namespace (--token, HF_TOKEN or `hf auth login`)",
            )
        return CsrlError(f"the Hub answered HTTP {status} for {repo_id}: {str(exc).splitlines()[0]}")
    if _is_network_error(exc):
        return CsrlError(
            f"network unreachable: cannot reach the Hugging Face Hub ({type(exc).__name__}: {exc})",
            hint="check the connection (and proxy settings), then push again",
        )
    return None


def push_to_hub(
    run_dir: Path | str,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    api: Any = None,
) -> PushResult:
    """Upload the best model of ``run_dir`` to the Hub repository ``repo_id`` (created if needed).

    token: a Hugging Face token (None: huggingface_hub's own lookup, HF_TOKEN or the saved login).
    api: an ``HfApi`` (tests pass a stand-in); None = ``HfApi(token=token)``.
    """
    from huggingface_hub import constants

    folder = model_folder(run_dir)
    _check_repo_id(repo_id)
    if constants.is_offline_mode():
        raise _offline_error()
    card = folder / "README.md"
    if card.is_file() and MODEL_ID_PLACEHOLDER in (text := card.read_text(encoding="utf-8")):
        atomic_write_text(card, set_model_id(text, repo_id))
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, token=token, private=private, repo_type="model", exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            token=token,
            commit_message=commit_message or f"csrl: upload {folder}",
            ignore_patterns=IGNORED,
        )
    except Exception as exc:
        error = _hub_error(exc, repo_id)
        if error is None:
            raise
        raise error from None
    n_files = sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    return PushResult(folder, repo_id, str(url), str(getattr(info, "commit_url", info)), n_files)


def _offline_error() -> CsrlError:
    return CsrlError(
        "offline: HF_HUB_OFFLINE is set, so nothing can be uploaded",
        hint="unset HF_HUB_OFFLINE on a machine that reaches huggingface.co, then push again",
    )


__all__ = ["PushResult", "model_folder", "push_to_hub"]
