"""What a run records about where it ran: git commit (the engine's `gitops`), CI event, machine, GPUs (`gpus`),
versions."""

from __future__ import annotations

import os
import platform
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from typing import TYPE_CHECKING

from harness.bundle import RunRecord
from harness.errors import HarnessError
from harness.run.gpus import GpuInfo, gpu_info

if TYPE_CHECKING:
    import git

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


def open_repo(path: str | os.PathLike[str]) -> git.Repo:
    """The git repository at `path` (its top level): the engine's `gitops.open_repo`, whose one-line error
    becomes a HarnessError (exit 2). GitPython is imported on first use."""
    from harness_bisect import gitops

    try:
        return gitops.open_repo(path)
    except gitops.BisectError as exc:
        raise HarnessError(exc.message) from None


def commit_info(path: str | os.PathLike[str], branch: str | None = None) -> CommitInfo:
    """The commit at HEAD of `path`; the branch is `branch`, else Actions' ref, else the checkout's."""
    from harness_bisect import gitops

    repo = open_repo(path)
    try:
        head = gitops.commit_info(repo, repo.head.commit.hexsha)
    except ValueError:
        raise HarnessError(f"--repo {repo.working_tree_dir}: repository has no commits yet") from None
    branch = branch or os.environ.get("GITHUB_HEAD_REF") or os.environ.get("GITHUB_REF_NAME")
    if not branch:
        try:
            branch = repo.active_branch.name
        except TypeError:  # detached HEAD
            branch = None
    return CommitInfo(repo=str(repo.working_tree_dir), sha=head.sha, subject=head.subject,
                      author=head.author, email=head.email, branch=branch)


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
