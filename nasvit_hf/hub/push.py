"""Pushing saved model folders to the Hugging Face Hub (`huggingface_hub.HfApi`: create the repo, upload the folder).

Safe by default:
- `private=None` (the default) creates the repo with the account's or organisation's default visibility; nothing
  sends `private=False`. A requested `private=True` is verified with `repo_info` after `create_repo` (an existing
  repo keeps its visibility), and the push is refused, before anything is uploaded, if the repo is public.
- Files that would reveal local paths (absolute paths in README.md or the JSON files) are refused before upload.
- The token comes from `HF_TOKEN` or `huggingface-cli login` (`HfApi`'s own lookup) unless one is passed.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

__all__ = ["find_local_paths", "push_folder_to_hub", "strip_local_paths"]

logger = logging.getLogger(__name__)

# An absolute POSIX path (two or more components, not inside a word or a relative path), a home-relative path, or
# a Windows drive path. URLs are removed before matching.
_LOCAL_PATH = re.compile(r"(?<![\w./~-])(?:~|[A-Za-z]:)?[/\\](?:[\w.@+-]+[/\\])+[\w.@+-]*")
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
_TEXT_SUFFIXES = {".md", ".json", ".txt", ".yaml", ".yml"}


def _local_paths_in(text: str) -> list[str]:
    return [match.group(0) for match in _LOCAL_PATH.finditer(_URL.sub(" ", text))]


def strip_local_paths(text: str) -> str:
    """`text` with every absolute local path replaced by its last component (`imagefolder:/data/in1k` ->
    `imagefolder:in1k`): what saved files may say about where things lived on the machine that wrote them."""
    for path in sorted(set(_local_paths_in(text)), key=len, reverse=True):
        text = text.replace(path, Path(path.replace("\\", "/").rstrip("/")).name or path)
    return text


def find_local_paths(folder: str | os.PathLike) -> list[tuple[str, str]]:
    """(file name, path) for each absolute local path in the folder's text files (README.md, JSON, YAML, txt)."""
    found = []
    for file in sorted(Path(folder).rglob("*")):
        if file.is_file() and file.suffix in _TEXT_SUFFIXES and file.stat().st_size < 10_000_000:
            text = file.read_text(encoding="utf-8", errors="replace")
            found += [(file.relative_to(folder).as_posix(), path) for path in _local_paths_in(text)]
    return found


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    api=None,
    require_config: bool = True,
) -> str:
    """Create `repo_id` (a model repo; no error when it exists) and upload `folder` to it. Returns the commit URL.

    Args:
        folder: a saved model folder (config.json, weights, README.md model card).
        repo_id: `<user or organisation>/<name>`.
        token: None (recommended) reads `HF_TOKEN` or the `huggingface-cli login` token.
        private: None keeps the account's default visibility for a new repo; True requests a private repo and
            refuses to upload unless the Hub reports the repo private (checked for existing repos too).
        api: defaults to `huggingface_hub.HfApi(token=token)`; pass another object with `create_repo`,
            `repo_info` and `upload_folder` to test without the network.
        require_config: False for a folder that is not a model (the family index: a card and family.json).
    """
    folder = Path(folder)
    if require_config and not (folder / "config.json").is_file():
        raise ValueError(f"{str(folder)!r} is not a saved model folder (no config.json).")
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo_id must be '<user or org>/<name>', got {repo_id!r}.")
    if private not in (None, True, False):
        raise ValueError(f"private must be True, False or None (the account's default), got {private!r}.")
    leaks = find_local_paths(folder)
    if leaks:
        listed = "; ".join(f"{name}: {path!r}" for name, path in leaks[:5])
        raise ValueError(
            f"{str(folder)!r} holds local paths that would be published ({listed}). Nothing was pushed: remove them "
            "from these files (recipes/extract.py writes names, not paths) and push again."
        )
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    visibility = {} if private is None else {"private": private}
    api.create_repo(repo_id=repo_id, repo_type="model", exist_ok=True, **visibility)
    is_private = bool(api.repo_info(repo_id=repo_id, repo_type="model").private)
    if private and not is_private:
        raise PermissionError(
            f"{repo_id} is public although a private repo was requested (an existing repo keeps its visibility). "
            "Nothing was uploaded: make it private in its settings on the Hub (or "
            f"HfApi().update_repo_settings({repo_id!r}, private=True)), or push to a new repo name."
        )
    logger.info("pushing %s to the %s repo %s", folder, "private" if is_private else "public", repo_id)
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type="model",
        folder_path=str(folder),
        commit_message=commit_message or f"Upload {folder.name} (nasvit_hf extract)",
    )
    return getattr(commit, "commit_url", None) or str(commit)
