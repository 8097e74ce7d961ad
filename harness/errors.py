"""The one error base class. `harness/cli.py` turns any `HarnessError` into exit code 2."""

from __future__ import annotations


class HarnessError(Exception):
    """Bad input or an unusable environment: one line for the user, exit code 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
