"""Test history: one test's outcome and duration over commits, with its culprits as annotations."""

from __future__ import annotations

from harness.report.dashboards.panels import FINAL_RESULTS, Board, dim_variable_sql, in_filter

# The variable shows node ids and holds their nodeid_hash, the indexed key (store/schema.py).
TEST_HASH = "${test:sqlstring}"


def build() -> Board:
    b = Board("harness-test-history", "Harness · Test history",
              "Outcome and duration of one test over commits; culprit commits as annotations.")
    b.query_variable("test", "Test", """
SELECT nodeid AS __text, nodeid_hash AS __value FROM rollup_test_names
ORDER BY last_started_at DESC LIMIT 5000""",
                     multi=False, include_all=False)
    b.query_variable("runner_group", "Runner group", dim_variable_sql("runner_group"))
    b.query_variable("branch", "Branch", dim_variable_sql("branch"))
    filters = f"{in_filter('r.branch', 'branch')} AND {in_filter('r.runner_group', 'runner_group')}"

    b.panel("state-timeline", "Outcome over time", f"""
WITH {FINAL_RESULTS}
SELECT r.started_at AS time, coalesce(r.runner_group, '(none)') AS metric, f.outcome AS value
FROM final f JOIN runs r ON r.id = f.run_id
WHERE f.nodeid_hash = {TEST_HASH} AND $__timeFilter(r.started_at) AND {filters}
ORDER BY 1""", ("time", "metric", "value"), w=24, h=6,
            overrides=[], custom={"fillOpacity": 80},
            options={"showValue": "never", "mergeValues": True})
    b.panels[-1]["fieldConfig"]["defaults"]["mappings"] = [{"type": "value", "options": {
        "passed": {"color": "green", "index": 0}, "failed": {"color": "red", "index": 1},
        "error": {"color": "dark-red", "index": 2}, "crashed": {"color": "purple", "index": 3},
        "timeout": {"color": "orange", "index": 4}, "skipped": {"color": "gray", "index": 5},
        "xfail": {"color": "blue", "index": 6}, "xpass": {"color": "yellow", "index": 7}}}]

    b.panel("timeseries", "Duration", f"""
WITH {FINAL_RESULTS}
SELECT r.started_at AS time, coalesce(r.runner_group, '(none)') AS metric, f.duration_s
FROM final f JOIN runs r ON r.id = f.run_id
WHERE f.nodeid_hash = {TEST_HASH} AND $__timeFilter(r.started_at) AND {filters}
ORDER BY 1""", ("time", "metric", "duration_s"), w=24, unit="s",
            custom={"drawStyle": "line", "showPoints": "always"})

    b.panel("table", "Runs of this test, by commit", f"""
WITH {FINAL_RESULTS}
SELECT r.started_at AS time, left(r.commit_sha, 10) AS commit, left(r.commit_subject, 70) AS subject,
       r.commit_author AS author, r.runner_group, f.device, f.outcome, f.attempt, f.duration_s,
       f.exception, f.signature, coalesce(f.skip_category, '') AS skip_category,
       left(f.message, 300) AS message
FROM final f JOIN runs r ON r.id = f.run_id
WHERE f.nodeid_hash = {TEST_HASH} AND $__timeFilter(r.started_at) AND {filters}
ORDER BY r.started_at DESC
LIMIT 500""", ("time", "commit", "subject", "author", "runner_group", "device", "outcome", "attempt",
               "duration_s", "exception", "signature", "skip_category", "message"), w=24, h=10, fmt="table",
            description="Every run of the test; a failing run shows its exception type and failure signature "
                        "(the same signature in two runs is the same failure), a skip its category.")

    b.panel("table", "Culprits and flake record", f"""
SELECT c.created_at AS time, 'culprit' AS kind, left(c.commit_sha, 10) AS commit, c.author, c.subject,
       c.pr, c.method, NULL::integer AS failures, NULL::integer AS attempts
FROM culprits c WHERE c.nodeid_hash = {TEST_HASH}
UNION ALL
SELECT ft.last_seen AS time, 'flaky on ' || ft.device || coalesce(' · ' || nullif(ft.signature, ''), '') AS kind,
       NULL, NULL, NULL, NULL, NULL,
       ft.failures, ft.attempts
FROM flaky_tests ft WHERE ft.nodeid_hash = {TEST_HASH}
ORDER BY 1 DESC""", ("time", "kind", "commit", "author", "subject", "pr", "method", "failures", "attempts"),
            w=24, h=6, fmt="table")

    b.annotation("Culprits of this test", f"""
SELECT coalesce((SELECT min(r.started_at) FROM runs r WHERE r.commit_sha = c.commit_sha), c.created_at) AS time,
       'culprit ' || left(c.commit_sha, 10) || ' by ' || coalesce(c.author, '?') || ': '
         || coalesce(c.subject, '') || coalesce(' (PR #' || c.pr || ')', '') AS text,
       'culprit,' || c.method AS tags
FROM culprits c
WHERE c.nodeid_hash = {TEST_HASH}""", "red")
    return b
