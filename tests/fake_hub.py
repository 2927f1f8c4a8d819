"""A stand-in for `huggingface_hub.HfApi` that records calls and keeps repo visibility, for push tests offline."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace


class FakeHfApi:
    """Repos live in `self.repos` (repo_id -> private). A new repo gets `private` if sent, else the account's
    default; an existing one keeps its visibility (as on the Hub). `honours_private=False` simulates a Hub that
    creates public repos whatever is asked. `calls` records (method, kwargs); `uploaded` the files per repo."""

    def __init__(self, *, default_private: bool = False, honours_private: bool = True, repos: dict | None = None):
        self.default_private = default_private
        self.honours_private = honours_private
        self.repos: dict[str, bool] = dict(repos or {})
        self.calls: list[tuple[str, dict]] = []
        self.uploaded: dict[str, list[str]] = {}

    def create_repo(self, repo_id, *, repo_type=None, exist_ok=False, private=None, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, "repo_type": repo_type, "exist_ok": exist_ok,
                                           **({} if private is None else {"private": private}), **kwargs}))  # fmt: skip
        if repo_id in self.repos:
            if not exist_ok:
                raise FileExistsError(repo_id)
        else:
            wanted = self.default_private if private is None else private
            self.repos[repo_id] = wanted if self.honours_private else False
        return f"https://huggingface.co/{repo_id}"

    def repo_info(self, repo_id, *, repo_type=None, **kwargs):
        self.calls.append(("repo_info", {"repo_id": repo_id, "repo_type": repo_type, **kwargs}))
        return SimpleNamespace(id=repo_id, private=self.repos[repo_id])

    def upload_folder(self, *, repo_id, folder_path, repo_type=None, commit_message=None, **kwargs):
        self.calls.append(("upload_folder", {"repo_id": repo_id, "repo_type": repo_type, "folder_path": folder_path,
                                             "commit_message": commit_message, **kwargs}))  # fmt: skip
        root = Path(folder_path)
        self.uploaded[repo_id] = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/1")

    @property
    def methods(self) -> list[str]:
        return [name for name, _ in self.calls]
