"""Flaky tests: the one type and the one rule, for the bisect engine and the platform alike.

The rule (`is_flaky`): a test is flaky when its attempts at one commit disagree, some failing and
some not. Everyone applies it to the attempts they have:
- confirmation reruns (`harness new-failures --confirm`): the run's failure plus the reruns at the
  run's commit (attempts that could not run, e.g. skipped, are left out);
- bisect endpoint verification: the attempts at bad, and at good when bad fails every time, each
  against the requested number of retries (an attempt that did not run counts as not failing);
- the report: a run's own attempts of a test, and the accumulated `flaky_tests` record.

`Flaky` is what each of them hands on: counts, the device, and an optional failure `signature`
(issue 15: flaky detection keys on (test, signature), so a test that fails two different ways is not
one flaky test: `observe_signature`). Standard library only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Flaky", "is_flaky", "observe", "observe_signature"]


def is_flaky(failures: int, attempts: int) -> bool:
    """The rule: some of the `attempts` at one commit failed and some did not."""
    return 0 < failures < attempts


@dataclass(frozen=True)
class Flaky:
    """`failures` out of `attempts` of one test (a pytest node id) on one device ("" when unknown).

    `failed`: whether the observed run's final attempt failed (False: it passed on retry).
    `signature`: the failure signature the counts are of, when known (see `key`)."""

    test: str
    device: str
    failures: int
    attempts: int
    signature: str | None = None
    failed: bool = True

    @property
    def nodeid(self) -> str:
        """The platform's name for `test`."""
        return self.test

    @property
    def key(self) -> tuple[str, str | None]:
        """What flaky history is kept per: the test and, once known, its failure signature."""
        return (self.test, self.signature)

    @property
    def fail_rate(self) -> float:
        return self.failures / self.attempts if self.attempts else 0.0

    def to_json(self, name: str = "test", device: bool = False) -> dict[str, Any]:
        """`{name: test, "failures", "attempts"}` (plus `device` if asked, `signature` when known)."""
        out: dict[str, Any] = {name: self.test}
        if device:
            out["device"] = self.device
        out.update(failures=self.failures, attempts=self.attempts)
        if self.signature is not None:
            out["signature"] = self.signature
        return out


def observe(test: str, failed: Iterable[bool], *, device: str = "", signature: str | None = None,
            last_failed: bool = True) -> Flaky | None:
    """A `Flaky` of `test` when its attempts (True: that attempt failed) satisfy the rule, else None."""
    flags = list(failed)
    failures = sum(1 for f in flags if f)
    if not is_flaky(failures, len(flags)):
        return None
    return Flaky(test, device, failures, len(flags), signature=signature, failed=last_failed)


def observe_signature(test: str, attempts: Iterable[tuple[bool, str | None]], *, signature: str | None,
                      device: str = "", last_failed: bool = True) -> Flaky | None:
    """A `Flaky` keyed (test, `signature`) from (failed, signature) attempts: an attempt that failed
    another way is neither this failure nor a pass and is left out, so a test that only ever fails,
    in two different ways, is never flaky. An attempt (or `signature`) without a signature matches."""
    flags = [failed for failed, sig in attempts
             if not failed or signature is None or sig is None or sig == signature]
    return observe(test, flags, device=device, signature=signature, last_failed=last_failed)
