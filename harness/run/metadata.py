"""What a run records about where it ran: git commit (GitPython), CI event, machine, GPUs, versions."""

from __future__ import annotations

import os
import platform
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path

from harness.bundle import RunRecord
from harness.errors import HarnessError
from harness.run.gpus import GpuInfo, gpu_info

__all__ = ["CommitInfo", "GpuInfo", "commit_info", "gpu_info", "open_repo", "package_version", "run_record"]


@dataclass(frozen=True)
class CommitInfo:
    """The commit a run tests."""

    repo: str
    sha: str
    subject: str
    author: str
    email: str
    branch: str | None


def open_repo(path: str | os.PathLike[str]):  # noqa: ANN201 - git.Repo, imported lazily
    """The git repository at `path` (its top level), or a HarnessError saying what is wrong."""
    import git

    p = Path(path).expanduser()
    if not p.is_dir():
        raise HarnessError(f"--repo {p}: no such directory")
    try:
        return git.Repo(p, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise HarnessError(f"--repo {p}: not a git repository (run `git init` or point at a clone)") from None


def commit_info(path: str | os.PathLike[str], branch: str | None = None) -> CommitInfo:
    """The commit at HEAD of `path`; the branch is `branch`, else Actions' ref, else the checkout's."""
    repo = open_repo(path)
    try:
        head = repo.head.commit
    except ValueError:
        raise HarnessError(f"--repo {repo.working_tree_dir}: repository has no commits yet") from None
    branch = branch or os.environ.get("GITHUB_HEAD_REF") or os.environ.get("GITHUB_REF_NAME")
    if not branch:
        try:
            branch = repo.active_branch.name
        except TypeError:  # detached HEAD
            branch = None
    return CommitInfo(repo=str(repo.working_tree_dir), sha=head.hexsha, subject=head.summary,
                      author=head.author.name, email=head.author.email, branch=branch)


def package_version(name: str) -> str | None:
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return None


def run_record(commit: CommitInfo, *, runner_group: str, machine_type: str | None, gpus: GpuInfo,
               suites: list[str], models: list[str]) -> RunRecord:
    """The run header written first to the bundle and to `runs`."""
    torch_version = package_version("torch")
    build = torch_version.split("+cu", 1)[1] if torch_version and "+cu" in torch_version else None
    cuda = f"{build[:-1]}.{build[-1]}" if build and build.isdigit() else gpus.driver_cuda
    return RunRecord(
        repo=commit.repo, branch=commit.branch, commit_sha=commit.sha, commit_subject=commit.subject,
        commit_author=commit.author, commit_email=commit.email,
        event=os.environ.get("GITHUB_EVENT_NAME") or "manual", workflow=os.environ.get("GITHUB_WORKFLOW"),
        runner_group=runner_group, machine_type=machine_type, hostname=socket.gethostname(),
        gpu_name=gpus.name, gpu_count=gpus.count, python_version=platform.python_version(),
        torch_version=torch_version, cuda_version=cuda if gpus.count else None,
        suites=",".join(suites), models=",".join(models),
        started_at=datetime.now(timezone.utc).isoformat(),
    )
