"""Triage of a run's results: new failures against its baseline, confirmation reruns, flaky history."""

from __future__ import annotations

from harness.triage.new_failures import NewFailures, TestDelta, find_new_failures
from harness.triage.runs import NoBaselineError, TriageError

__all__ = ["NewFailures", "NoBaselineError", "TestDelta", "TriageError", "find_new_failures"]
