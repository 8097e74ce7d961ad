"""Benchmarks: the seed's panels per commit, device usage, roofline efficiency; perf alerts and culprits
as annotations. `model_measurements.measurements` is jsonb keyed by the seed's metric names."""

from __future__ import annotations

from harness.report.dashboards.panels import Board, filter_variable_sql, in_filter

FILTERS = " AND ".join([in_filter("b.branch", "branch"), in_filter("b.gpu_name", "gpu"),
                        in_filter("b.model", "model")])
SERIES = "b.model || coalesce(' ' || b.config, '') || coalesce(' ' || b.dtype, '')"

# (panel title, [(column label, measurements key)])
SEED_PANELS = [
    ("Eager forward pass", [("first", "first_eager_forward_pass_time_secs"),
                            ("second", "second_eager_forward_pass_time_secs")]),
    ("Time to first / second / third token", [("first token", "time_to_first_token_secs"),
                                              ("second token", "time_to_second_token_secs"),
                                              ("third token", "time_to_third_token_secs")]),
    ("Next token (mean)", [("next token mean", "time_to_next_token_mean_secs")]),
    ("Compiled generate, calls 1-4", [("call 1", "first_compile_generate_time_secs"),
                                     ("call 2", "second_compile_generate_time_secs"),
                                     ("call 3", "third_compile_generate_time_secs"),
                                     ("call 4", "fourth_compile_generate_time_secs")]),
]


def metric_sql(columns: list[tuple[str, str]]) -> str:
    values = ",\n       ".join(f"(m.measurements ->> '{key}')::float AS \"{label}\"" for label, key in columns)
    return f"""
SELECT b.created_at AS time, {SERIES} AS metric,
       {values}
FROM benchmarks b JOIN model_measurements m ON m.benchmark_id = b.benchmark_id
WHERE $__timeFilter(b.created_at) AND {FILTERS}
ORDER BY 1"""


def build() -> Board:
    b = Board("harness-benchmarks", "Harness · Benchmarks",
              "Seed benchmark metrics per commit, filtered by branch, GPU and model; perf alerts and culprits "
              "as annotations.", time_from="now-90d")
    b.query_variable("branch", "Branch", filter_variable_sql("benchmarks", "branch"))
    b.query_variable("gpu", "GPU", filter_variable_sql("benchmarks", "gpu_name"))
    b.query_variable("model", "Model", filter_variable_sql("benchmarks", "model"))

    for title, columns in SEED_PANELS:
        b.panel("timeseries", title, metric_sql(columns), ("time", "metric", *(c[0] for c in columns)),
                unit="s", custom={"drawStyle": "line", "showPoints": "always"},
                description="One point per benchmarked commit; hover for the values.")

    b.panel("timeseries", "Roofline efficiency", f"""
SELECT b.created_at AS time, {SERIES} || ' ' || e.key AS metric, (e.value #>> '{{}}')::float AS efficiency
FROM benchmarks b JOIN model_measurements m ON m.benchmark_id = b.benchmark_id
CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(m.measurements -> 'roofline') = 'object'
                                   THEN m.measurements -> 'roofline' ELSE '{{}}'::jsonb END) e
WHERE e.key LIKE '%efficiency%' AND jsonb_typeof(e.value) = 'number'
  AND $__timeFilter(b.created_at) AND {FILTERS}
ORDER BY 1""", ("time", "metric", "efficiency"), unit="percentunit",
            custom={"drawStyle": "line", "showPoints": "always"},
            description="Floor time over achieved time (1 = at the roofline), from the `roofline` object.")

    b.panel("timeseries", "Device usage per benchmark", f"""
SELECT b.created_at AS time, {SERIES} AS metric, avg(d.gpu_util) AS gpu_util_pct,
       max(d.gpu_mem_megabytes) AS gpu_mem_mb_max, avg(d.cpu_util) AS cpu_util_pct,
       max(d.mem_megabytes) AS mem_mb_max
FROM benchmarks b JOIN device_measurements d ON d.benchmark_id = b.benchmark_id
WHERE $__timeFilter(b.created_at) AND {FILTERS}
GROUP BY b.benchmark_id, b.created_at, b.model, b.config, b.dtype
ORDER BY 1""", ("time", "metric", "gpu_util_pct", "gpu_mem_mb_max", "cpu_util_pct", "mem_mb_max"),
            custom={"drawStyle": "line", "showPoints": "always"},
            description="Mean utilisation and peak memory of the samples taken while each benchmark ran.")

    b.panel("table", "Benchmarks by commit", f"""
SELECT b.created_at AS time, left(b.commit_id, 10) AS commit, b.commit_message, b.model, b.config, b.dtype,
       b.batch_size, b.prompt_length, b.gpu_name,
       (m.measurements ->> 'time_to_first_token_secs')::float AS ttft_s,
       (m.measurements ->> 'time_to_next_token_mean_secs')::float AS next_token_s,
       (m.measurements -> 'roofline' ->> 'decode_efficiency')::float AS decode_efficiency
FROM benchmarks b JOIN model_measurements m ON m.benchmark_id = b.benchmark_id
WHERE $__timeFilter(b.created_at) AND {FILTERS}
ORDER BY b.created_at DESC
LIMIT 500""", ("time", "commit", "commit_message", "model", "config", "dtype", "batch_size", "prompt_length",
               "gpu_name", "ttft_s", "next_token_s", "decode_efficiency"), w=24, h=10, fmt="table")

    b.panel("table", "Performance alerts", f"""
SELECT p.created_at AS time, p.direction, p.metric, p.model, p.gpu_name, p.branch,
       left(p.commit_before, 10) AS commit_before, left(p.commit_after, 10) AS commit_after,
       p.value_before, p.value_after, p.magnitude AS change, p.p_value
FROM perf_alerts p
WHERE {in_filter("p.branch", "branch")} AND {in_filter("p.gpu_name", "gpu")} AND {in_filter("p.model", "model")}
ORDER BY p.created_at DESC
LIMIT 200""", ("time", "direction", "metric", "model", "gpu_name", "branch", "commit_before", "commit_after",
               "value_before", "value_after", "change", "p_value"), w=24, h=8, fmt="table",
            overrides=[{"matcher": {"id": "byName", "options": "change"},
                        "properties": [{"id": "unit", "value": "percentunit"}]}])

    b.annotation("Performance alerts", f"""
SELECT coalesce((SELECT min(b2.created_at) FROM benchmarks b2 WHERE b2.commit_id = p.commit_after),
                p.created_at) AS time,
       p.direction || ': ' || p.metric || ' ' || coalesce(p.model, '') || ' '
         || to_char(p.magnitude * 100, 'FMS990.0') || '% at ' || left(p.commit_after, 10) AS text,
       'perf,' || p.direction AS tags
FROM perf_alerts p
WHERE {in_filter("p.branch", "branch")} AND {in_filter("p.gpu_name", "gpu")} AND {in_filter("p.model", "model")}""",
                 "orange")
    b.annotation("Culprits", """
SELECT coalesce((SELECT min(b2.created_at) FROM benchmarks b2 WHERE b2.commit_id = c.commit_sha),
                c.created_at) AS time,
       'culprit ' || left(c.commit_sha, 10) || ' by ' || coalesce(c.author, '?') || ': '
         || coalesce(c.subject, '') AS text,
       'culprit,' || c.method AS tags
FROM culprits c
WHERE c.created_at <= $__timeTo()""", "red")
    return b
