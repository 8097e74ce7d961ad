"""CI overview: pass rate per model, new failures, top failure signatures, flaky top-N, slowest tests,
skips that are not not-applicable, suite wall time.

Every panel reads tables kept at write time (harness/store/rollups.py), so its cost follows the time
range shown, not the size of `test_results`. "New failures" lists `rollup_new_failures`, the same
definition `harness new-failures` applies (last attempt failing, not failing in the baseline run).
"""

from __future__ import annotations

from harness.report.dashboards.panels import Board, dim_variable_sql, in_filter

RUN_FILTERS = " AND ".join([in_filter("r.branch", "branch"), in_filter("r.runner_group", "runner_group")])



def rollup_filters(alias: str) -> str:
    """Branch and runner-group filters on a rollup table (its keys already hold '(none)' for NULL)."""
    return f"{alias}.branch IN (${{branch:sqlstring}}) AND {alias}.runner_group IN (${{runner_group:sqlstring}})"


def build() -> Board:
    b = Board("harness-ci-overview", "Harness · CI overview",
              "Pass rate, new failures, flakes and timings of the test runs recorded by harness.")
    b.query_variable("branch", "Branch", dim_variable_sql("branch"))
    b.query_variable("runner_group", "Runner group", dim_variable_sql("runner_group"))
    b.query_variable("model", "Model", dim_variable_sql("model"))
    b.custom_variable("top_n", "Top N", ["10", "20", "50", "100"], "20")

    # With every branch and runner group selected (the default), the per-day x model sums are read: 10x
    # fewer rows; PostgreSQL evaluates `all_lanes` once and scans only one of the two tables.
    all_lanes = ("(NOT EXISTS (SELECT 1 FROM rollup_dims WHERE kind = 'branch' AND value NOT IN (${branch:sqlstring}))"
                 " AND NOT EXISTS (SELECT 1 FROM rollup_dims WHERE kind = 'runner_group'"
                 " AND value NOT IN (${runner_group:sqlstring})))")
    days = "BETWEEN date_trunc('day', $__timeFrom()::timestamp) AND $__timeTo()::timestamp"
    # Likewise with every model selected: the per-run x suite sums (rollup_run_suites) instead of per model.
    all_models = "NOT EXISTS (SELECT 1 FROM rollup_dims WHERE kind = 'model' AND value NOT IN (${model:sqlstring}))"
    b.panel("timeseries", "Pass rate per model", f"""
SELECT x.day AS time, x.model AS metric, x.passing * 1.0 / x.counted AS pass_rate
FROM (SELECT d.day, d.model, sum(d.n_pass) AS passing, sum(d.n_total - d.n_skip) AS counted
      FROM rollup_daily d
      WHERE NOT {all_lanes} AND d.day {days}
        AND {rollup_filters("d")} AND d.model IN (${{model:sqlstring}})
      GROUP BY d.day, d.model
      UNION ALL
      SELECT a.day, a.model, a.n_pass, a.n_total - a.n_skip
      FROM rollup_daily_models a
      WHERE {all_lanes} AND a.day {days} AND a.model IN (${{model:sqlstring}})) x
WHERE x.counted > 0
ORDER BY 1""", ("time", "metric", "pass_rate"), w=24, unit="percentunit",
            description="Share of non-skipped tests whose last attempt passed (or xfailed), per model and "
                        "UTC day (a day's point counts all its runs).")

    b.panel("table", "New failures", f"""
SELECT r.started_at AS time, r.id AS run, n.nodeid AS test, n.model, r.runner_group, n.outcome,
       left(r.commit_sha, 10) AS commit, left(n.message, 200) AS message,
       left(c.commit_sha, 10) AS culprit, c.author AS culprit_author, c.pr
FROM runs r
JOIN rollup_new_failures n ON n.run_id = r.id
LEFT JOIN LATERAL (SELECT * FROM culprits c WHERE c.nodeid_hash = n.nodeid_hash
                   ORDER BY c.created_at DESC LIMIT 1) c ON true
WHERE $__timeFilter(r.started_at) AND {RUN_FILTERS} AND {in_filter("n.model", "model")}
ORDER BY r.started_at DESC, r.id DESC, n.nodeid
LIMIT 500""", ("time", "run", "test", "model", "runner_group", "outcome", "commit", "message", "culprit",
               "culprit_author", "pr"), w=24, h=10, fmt="table",
            description="What `harness new-failures --run RUN` calls new: tests whose last attempt fails "
                        "and did not fail in the run's baseline (previous completed run of the same branch, "
                        "runner group, suites and models); with the culprit commit when bisect found one.")

    b.panel("table", "Top failure signatures", f"""
SELECT d.signature, max(g.exception) AS exception, left(max(g.message), 200) AS message,
       sum(d.n) AS failures, count(DISTINCT d.model) AS models,
       max(g.first_seen) AS first_seen, max(g.last_seen) AS last_seen
FROM rollup_signatures_daily d
JOIN rollup_signatures g ON g.signature = d.signature
WHERE d.day {days} AND d.model IN (${{model:sqlstring}})
GROUP BY d.signature
ORDER BY failures DESC, models DESC, d.signature
LIMIT $top_n""", ("signature", "exception", "message", "failures", "models", "first_seen", "last_seen"),
            w=24, h=8, fmt="table",
            description="Failing results (last attempts) per failure signature in the time range, all branches "
                        "and runner groups: one broken code path seen by many models is one row. First / last "
                        "seen: the first and latest run start the signature was ever recorded in.")

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
SELECT max(t.nodeid) AS test, max(t.model) AS model, max(t.suite) AS suite,
       sum(t.duration_sum) / sum(t.runs) AS mean_s, max(t.duration_max) AS max_s, sum(t.runs) AS runs
FROM rollup_tests t
WHERE $__timeFilter(t.last_started_at) AND {rollup_filters("t")} AND {in_filter("t.model", "model")}
GROUP BY t.nodeid_hash
ORDER BY mean_s DESC
LIMIT $top_n""", ("test", "model", "suite", "mean_s", "max_s", "runs"), fmt="table",
            description="Mean and longest duration of each test's last attempt over the runs recorded for it, "
                        "among tests that ran in the time range.",
            overrides=[{"matcher": {"id": "byRegexp", "options": "mean_s|max_s"},
                        "properties": [{"id": "unit", "value": "s"}]}])

    b.panel("table", "Skips that are not not-applicable, per suite", f"""
SELECT x.suite, sum(x.n_skip_explicit) AS explicit_skips, sum(x.n_skip) AS all_skips,
       round(sum(x.n_skip_explicit)::numeric / nullif(sum(x.n_skip), 0), 3) AS explicit_share,
       count(DISTINCT x.run_id) AS runs
FROM (SELECT c.run_id, c.suite, c.n_skip_explicit, c.n_skip
      FROM runs r JOIN rollup_run_counts c ON c.run_id = r.id
      WHERE NOT {all_models} AND $__timeFilter(r.started_at) AND {RUN_FILTERS}
        AND c.model IN (${{model:sqlstring}}) AND c.n_skip > 0
      UNION ALL
      SELECT u.run_id, u.suite, u.n_skip_explicit, u.n_skip
      FROM runs r JOIN rollup_run_suites u ON u.run_id = r.id
      WHERE {all_models} AND $__timeFilter(r.started_at) AND {RUN_FILTERS} AND u.n_skip > 0) x
GROUP BY x.suite
ORDER BY explicit_skips DESC, x.suite""", ("suite", "explicit_skips", "all_skips", "explicit_share", "runs"),
            w=12, fmt="table",
            description="Skips a developer asked for (pytest.skip / skip markers without a platform reason, "
                        "xfail) beside all skips, per suite: a real skip stops hiding among platform, "
                        "hardware, runner-group and optional-dependency gates (`not-applicable`).",
            overrides=[{"matcher": {"id": "byName", "options": "explicit_share"},
                        "properties": [{"id": "unit", "value": "percentunit"}]}])

    b.panel("timeseries", "Suite wall time per runner group", f"""
SELECT r.started_at AS time,
       coalesce(r.runner_group, '(none)') || ' · ' || coalesce(r.suites, 'all') AS metric,
       extract(epoch FROM r.finished_at - r.started_at) AS wall_s
FROM runs r
WHERE r.finished_at IS NOT NULL AND $__timeFilter(r.started_at) AND {RUN_FILTERS}
ORDER BY 1""", ("time", "metric", "wall_s"), w=12, unit="s",
            custom={"drawStyle": "line", "showPoints": "always"})

    b.panel("table", "Recent runs", f"""
SELECT r.started_at AS time, r.id AS run, r.branch, left(r.commit_sha, 10) AS commit,
       left(r.commit_subject, 60) AS subject, r.runner_group, r.gpu_name, r.status,
       s.n_pass AS passed, s.n_fail AS failing, s.n_skip AS skipped
FROM runs r LEFT JOIN rollup_runs s ON s.run_id = r.id
WHERE $__timeFilter(r.started_at) AND {RUN_FILTERS}
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
