"""Real git repositories for triage and bisect tests, built commit by commit with GitPython.

The default target: ``pkg/core.py`` holds constants (``A = 1`` ...) and ``tests/test_core.py`` checks
each one (``test_a`` ... ), so a commit that changes a constant breaks exactly its test. Filler
commits touch ``notes.txt``.
"""

from __future__ import annotations

from pathlib import Path

import git

TEST_HEADER = "import os\nimport time\nfrom pathlib import Path\n\nfrom pkg import core\n\n"


def core_source(values: dict[str, int]) -> str:
    return "".join(f"{k} = {v}\n" for k, v in sorted(values.items()))


def core_tests(names: list[str]) -> str:
    return TEST_HEADER + "".join(f"\ndef test_{n.lower()}():\n    assert core.{n} == {ord(n)}\n" for n in names)


class RepoBuilder:
    """A repository in `root` on branch main, with helpers to commit file changes."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.repo = git.Repo.init(root, initial_branch="main")
        with self.repo.config_writer() as cw:
            cw.set_value("user", "name", "Fixture").set_value("user", "email", "fixture@example.com")
        self.shas: list[str] = []
        self._n = 0

    def commit(self, files: dict[str, str | None], message: str | None = None,
               author: tuple[str, str] = ("Ada Lovelace", "ada@example.com")) -> str:
        """Write (or, with None, delete) `files` and commit them; returns the sha."""
        self._n += 1
        add, remove = [], []
        for name, body in files.items():
            path = self.root / name
            if body is None:
                path.unlink()
                remove.append(name)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(body)
                add.append(name)
        if add:
            self.repo.index.add(add)
        if remove:
            self.repo.index.remove(remove)
        who = git.Actor(*author)
        sha = self.repo.index.commit(message or f"change {self._n}", author=who, committer=who).hexsha
        self.shas.append(sha)
        return sha

    def filler(self, note: str | None = None) -> str:
        return self.commit({"notes.txt": f"{note or self._n}\n"}, f"docs: note {self._n + 1}")


def core_repo(root: Path, names: str = "ABCD", commits: int = 16,
              changes: dict[int, tuple[dict[str, str | None], str]] | None = None,
              extra: dict[str, str] | None = None) -> RepoBuilder:
    """Commit 0 is good: core constants `names` all right and their tests; commits 1..`commits` are
    fillers except where `changes` gives (files, subject) for that index. Values in `files` that are
    dicts of constants are rendered with `core_source`."""
    b = RepoBuilder(root)
    values = {n: ord(n) for n in names}
    b.commit({"pkg/__init__.py": "", "pkg/core.py": core_source(values), "tests/test_core.py": core_tests(list(names)),
              ".gitignore": "__pycache__/\n.harness/\n", **(extra or {})}, "initial import")
    for i in range(1, commits + 1):
        if changes and i in changes:
            files, subject = changes[i]
            b.commit(files, subject, author=("Eve Breaker", "eve@example.com"))
        else:
            b.filler()
    return b


def broken_core(names: str, broken: dict[str, int]) -> str:
    """core.py with some constants changed (their tests then fail)."""
    return core_source({n: broken.get(n, ord(n)) for n in names})
