"""Pushing exported folders to the Hugging Face Hub (`huggingface_hub.HfApi`: create the repo, upload the folder)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["push_folder_to_hub"]

logger = logging.getLogger(__name__)


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
    api=None,
) -> str:
    """Create `repo_id` (a model repo; no error when it exists) and upload `folder` to it. Returns the commit URL.

    `api` defaults to `huggingface_hub.HfApi(token=token)`; pass another object with `create_repo` and
    `upload_folder` to test without the network.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{str(folder)!r} is not an exported model folder (no config.json).")
    if "/" not in repo_id:
        raise ValueError(f"repo_id must be '<user or org>/<name>', got {repo_id!r}.")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type="model",
        folder_path=str(folder),
        commit_message=commit_message or f"Upload {folder.name} (nasvit_hf export)",
    )
    url = getattr(commit, "commit_url", None) or str(commit)
    logger.info("pushed %s to %s", folder, repo_id)
    return url
