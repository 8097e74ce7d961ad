"""CI overview: pass rate per model, new failures, flaky top-N, slowest tests, suite wall time."""

from __future__ import annotations

from harness.report.dashboards.panels import FAILING, FINAL_RESULTS, Board, filter_variable_sql, in_filter

RUN_FILTERS = " AND ".join([in_filter("r.branch", "branch"), in_filter("r.runner_group", "runner_group")])


def build() -> Board:
    b = Board("harness-ci-overview", "Harness · CI overview",
              "Pass rate, new failures, flakes and timings of the test runs recorded by harness.")
    b.query_variable("branch", "Branch", filter_variable_sql("runs", "branch"))
    b.query_variable("runner_group", "Runner group", filter_variable_sql("runs", "runner_group"))
    b.query_variable("model", "Model", filter_variable_sql("test_results", "model"))
    b.custom_variable("top_n", "Top N", ["10", "20", "50", "100"], "20")

    b.panel("timeseries", "Pass rate per model", f"""
WITH {FINAL_RESULTS}
SELECT $__timeGroupAlias(r.started_at, '1d'), coalesce(f.model, '(none)') AS metric,
       avg(CASE WHEN f.outcome IN ('passed', 'xfail') THEN 1.0 ELSE 0.0 END) AS pass_rate
FROM final f JOIN runs r ON r.id = f.run_id
WHERE $__timeFilter(r.started_at) AND f.outcome <> 'skipped' AND {RUN_FILTERS}
  AND {in_filter("f.model", "model")}
GROUP BY 1, 2
ORDER BY 1""", ("time", "metric", "pass_rate"), w=24, unit="percentunit",
            description="Share of non-skipped tests whose last attempt passed, per model and day.")

    b.panel("table", "New failures", f"""
WITH {FINAL_RESULTS},
seq AS (
  SELECT f.nodeid, f.nodeid_hash, f.model, f.suite, f.outcome, f.message, r.id AS run_id, r.started_at,
         r.commit_sha, r.branch, r.runner_group,
         lag(f.outcome) OVER (PARTITION BY f.nodeid_hash, r.branch, r.runner_group, r.suites
                              ORDER BY r.started_at, r.id) AS previous
  FROM final f JOIN runs r ON r.id = f.run_id
  WHERE r.status = 'completed'
)
SELECT s.started_at AS time, s.nodeid AS test, s.model, s.runner_group, s.outcome,
       left(s.commit_sha, 10) AS commit, left(s.message, 200) AS message,
       left(c.commit_sha, 10) AS culprit, c.author AS culprit_author, c.pr
FROM seq s
LEFT JOIN LATERAL (SELECT * FROM culprits c WHERE c.nodeid_hash = s.nodeid_hash
                   ORDER BY c.created_at DESC LIMIT 1) c ON true
WHERE s.outcome IN {FAILING} AND s.previous = 'passed' AND $__timeFilter(s.started_at)
  AND {in_filter("s.branch", "branch")} AND {in_filter("s.runner_group", "runner_group")}
  AND {in_filter("s.model", "model")}
ORDER BY s.started_at DESC
LIMIT 500""", ("time", "test", "model", "runner_group", "outcome", "commit", "message", "culprit",
               "culprit_author", "pr"), w=24, h=10, fmt="table",
            description="Tests whose last attempt failed where the previous run of the same branch, runner "
                        "group and suites passed; with the culprit commit when bisect found one.")

    b.panel("table", "Flaky tests (top N by fail rate)", """
SELECT ft.nodeid AS test, ft.device, ft.failures, ft.attempts,
       round(ft.failures::numeric / ft.attempts, 3) AS fail_rate, ft.last_seen
FROM flaky_tests ft
WHERE ft.attempts > 0 AND ft.failures > 0
ORDER BY fail_rate DESC, ft.failures DESC
LIMIT $top_n""", ("test", "device", "failures", "attempts", "fail_rate", "last_seen"), fmt="table",
            overrides=[{"matcher": {"id": "byName", "options": "fail_rate"},
                        "properties": [{"id": "unit", "value": "percentunit"}]}])

    b.panel("table", "Slowest tests", f"""
WITH {FINAL_RESULTS}
SELECT f.nodeid AS test, f.model, f.suite, avg(f.duration_s) AS mean_s, max(f.duration_s) AS max_s,
       count(*) AS runs
FROM final f JOIN runs r ON r.id = f.run_id
WHERE $__timeFilter(r.started_at) AND {RUN_FILTERS} AND {in_filter("f.model", "model")}
GROUP BY f.nodeid, f.model, f.suite
ORDER BY mean_s DESC
LIMIT $top_n""", ("test", "model", "suite", "mean_s", "max_s", "runs"), fmt="table",
            overrides=[{"matcher": {"id": "byRegexp", "options": "mean_s|max_s"},
                        "properties": [{"id": "unit", "value": "s"}]}])

    b.panel("timeseries", "Suite wall time per runner group", f"""
SELECT r.started_at AS time,
       coalesce(r.runner_group, '(none)') || ' · ' || coalesce(r.suites, 'all') AS metric,
       extract(epoch FROM r.finished_at - r.started_at) AS wall_s
FROM runs r
WHERE r.finished_at IS NOT NULL AND $__timeFilter(r.started_at) AND {RUN_FILTERS}
ORDER BY 1""", ("time", "metric", "wall_s"), w=12, unit="s",
            custom={"drawStyle": "line", "showPoints": "always"})

    b.panel("table", "Recent runs", f"""
WITH {FINAL_RESULTS}
SELECT r.started_at AS time, r.id AS run, r.branch, left(r.commit_sha, 10) AS commit,
       left(r.commit_subject, 60) AS subject, r.runner_group, r.gpu_name, r.status,
       count(*) FILTER (WHERE f.outcome = 'passed') AS passed,
       count(*) FILTER (WHERE f.outcome IN {FAILING}) AS failing,
       count(*) FILTER (WHERE f.outcome = 'skipped') AS skipped
FROM runs r LEFT JOIN final f ON f.run_id = r.id
WHERE $__timeFilter(r.started_at) AND {RUN_FILTERS}
GROUP BY r.id
ORDER BY r.started_at DESC
LIMIT 50""", ("time", "run", "branch", "commit", "subject", "runner_group", "gpu_name", "status", "passed",
              "failing", "skipped"), w=12, fmt="table")

    b.annotation("Culprits", """
SELECT coalesce((SELECT min(r.started_at) FROM runs r WHERE r.commit_sha = c.commit_sha), c.created_at) AS time,
       'culprit ' || left(c.commit_sha, 10) || ' by ' || coalesce(c.author, '?') || ': '
         || coalesce(c.subject, '') || ' (' || c.nodeid || ')' AS text,
       'culprit,' || c.method AS tags
FROM culprits c
WHERE c.created_at <= $__timeTo()""", "red")
    return b
