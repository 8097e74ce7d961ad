"""The `harness` command line: parses arguments and calls the library. Imported by nothing.

Exit codes: 0 success; 1 the work ran and found failures; 2 bad input or unusable environment
(one line on stderr, from the single `HarnessError` handler in `main`).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from harness.errors import HarnessError

# typer vendors click; its ClickException is the base of BadParameter, whichever copy is in use.
CLICK_ERRORS = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

app = typer.Typer(name="harness", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="CI and regression tracking for ML model correctness and performance.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema management.")
app.add_typer(db_app, name="db")

DbOption = Annotated[str | None, typer.Option("--db", help="database URL (default: HARNESS_DB_URL, "
                                                 "else sqlite:///.harness/results.db)")]
JsonOption = Annotated[bool, typer.Option("--json", help="print one JSON object instead of tables")]


def print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None) -> None:
    """Apply migrations to the results database."""
    from harness.config import resolve_db_url
    from harness.store import Store, redact

    url = resolve_db_url(db)
    store = Store.open(url)
    typer.echo(f"{redact(url)} at revision {store.current_revision()}")


@db_app.command("prune")
def db_prune(
    before: Annotated[str, typer.Option("--before", help="remove raw rows of runs started before this date "
                                        "(YYYY-MM-DD or ISO timestamp, UTC)")],
    batch: Annotated[int, typer.Option("--batch", min=1, help="rows deleted per transaction")] = 20000,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="count what would go, remove nothing")] = False,
    db: DbOption = None,
) -> None:
    """Remove test results and device samples of old runs; keep runs, rollups and benchmark metrics."""
    from harness.config import resolve_db_url
    from harness.store import Store
    from harness.store.prune import parse_cutoff, prune, summary

    cutoff = parse_cutoff(before)
    store = Store.open(resolve_db_url(db))
    try:
        typer.echo(summary(prune(store, cutoff, batch_size=batch, dry_run=dry_run)))
    finally:
        store.dispose()


@app.command("run")
def run_cmd(
    models: Annotated[str, typer.Option("--models", help="comma-separated model names, or 'all'")] = "all",
    suite: Annotated[str | None, typer.Option("--suite", help="slow,fa2,quantization,benchmark "
                                                 "(default: all that apply to the runner group)")] = None,
    runner_group: Annotated[str | None, typer.Option("--runner-group", help="cpu | single-gpu | multi-gpu "
                                                        "(default: detected from visible GPUs)")] = None,
    workers: Annotated[int | None, typer.Option("-n", "--workers", help="xdist workers (default: one per "
                                                   "GPU, else up to 4 CPUs)")] = None,
    repo: Annotated[str, typer.Option("--repo", help="target git repository")] = ".",
    db: DbOption = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="per-test timeout in seconds")] = None,
    branch: Annotated[str | None, typer.Option("--branch", help="branch to record (default: the checkout's, "
                                               "or GITHUB_REF_NAME in Actions)")] = None,
    as_json: JsonOption = False,
) -> None:
    """Run suites for models and record every result."""
    from rich.console import Console

    from harness.config import resolve_db_url
    from harness.run.runner import RunOptions, print_summary, progress_period_s, run

    err = Console(stderr=True)
    outcome = run(RunOptions(models=models, suites=suite, runner_group=runner_group, workers=workers, repo=repo,
                             db_url=resolve_db_url(db), timeout=timeout, branch=branch,
                             show_progress=not as_json and err.is_terminal,
                             plain_progress_s=None if err.is_terminal else progress_period_s()),
                  console=err)
    if as_json:
        print_json(outcome.as_json())
    else:
        print_summary(outcome, Console())
    raise typer.Exit(outcome.exit_code)


@app.command("ingest")
def ingest_cmd(
    paths: Annotated[list[str], typer.Argument(help="results bundles (.jsonl) or JUnit XML files (.xml)")],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Load results bundles or JUnit XML into the store (ingesting twice adds nothing)."""
    from harness.config import resolve_db_url
    from harness.ingest import ingest

    report = ingest(paths, resolve_db_url(db))
    if as_json:
        print_json(report.to_json())
    else:
        typer.echo(report.summary())
    for note in report.notes:
        sys.stderr.write(f"harness: {note}\n")
    raise typer.Exit(1 if report.rejected else 0)


@app.command("plan")
def plan_cmd(
    event: Annotated[str, typer.Option("--event", help="schedule | workflow_dispatch | push | pull_request")],
    changed_files: Annotated[list[str] | None, typer.Option("--changed-files", help="changed paths (repeat, "
                             "or comma/whitespace separated)")] = None,
    changed_files_from: Annotated[str | None, typer.Option("--changed-files-from", help="file with one "
                                  "changed path per line ('-': stdin)", allow_dash=True)] = None,
    labels: Annotated[list[str] | None, typer.Option("--labels", help="pull request labels (run-slow, "
                      "run-benchmark)")] = None,
    models: Annotated[str | None, typer.Option("--models", help="override: comma list or 'all'")] = None,
    suites: Annotated[str | None, typer.Option("--suites", help="override the event's suites")] = None,
    runner_groups: Annotated[str | None, typer.Option("--runner-groups", help="harness groups or Actions "
                             "runner-group names (default: by event)")] = None,
    important_only: Annotated[bool, typer.Option("--important-only", help="only the important models of the target description")] = False,
    models_per_job: Annotated[int, typer.Option("--models-per-job", help="models in one matrix job "
                              "(0: all models of a runner group in one job)")] = 0,
    max_jobs: Annotated[int, typer.Option("--max-jobs", help="jobs per matrix slice (GitHub cap: 256)")] = 256,
    repo: Annotated[str, typer.Option("--repo", help="target git repository")] = ".",
    github_output: Annotated[str | None, typer.Option("--github-output", help="also append outputs to "
                             "this file (pass \"$GITHUB_OUTPUT\")")] = None,
) -> None:
    """Print the Actions matrix (models x suites x runner groups) for an event and its changed files."""
    from harness.plan import PlanRequest, make_plan, read_paths, split_list, write_github_output

    files = split_list(changed_files) + (read_paths(changed_files_from) if changed_files_from else [])
    plan = make_plan(PlanRequest(event=event, changed_files=files, labels=split_list(labels),
                                 models=split_list(models), suites=split_list(suites),
                                 runner_groups=split_list(runner_groups), important_only=important_only,
                                 models_per_job=models_per_job, max_jobs=max_jobs, repo=repo))
    if github_output:
        write_github_output(plan, github_output)
    print_json(plan)


@app.command("perf-alerts")
def perf_alerts_cmd(
    branch: Annotated[str | None, typer.Option("--branch", help="only this branch")] = None,
    gpu: Annotated[str | None, typer.Option("--gpu", help="only this GPU name")] = None,
    model: Annotated[str | None, typer.Option("--model", help="only this model")] = None,
    metric: Annotated[list[str] | None, typer.Option("--metric", help="only these metrics (repeat)")] = None,
    window: Annotated[int, typer.Option("--window", help="E-Divisive window, points")] = 50,
    max_pvalue: Annotated[float, typer.Option("--max-pvalue", help="significance level")] = 0.001,
    min_magnitude: Annotated[float, typer.Option("--min-magnitude", help="smallest relative change")] = 0.02,
    save: Annotated[bool, typer.Option("--save/--no-save", help="record new alerts in perf_alerts")] = True,
    repo: Annotated[str, typer.Option("--repo", help="repository named in the bisect commands")] = ".",
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Find performance change points in benchmark series; exit 1 when there are new regressions."""
    from harness.config import resolve_db_url
    from harness.report import perf_alerts as pa
    from harness.store import Store

    detector = pa.default_detector(window, max_pvalue, min_magnitude)
    result = pa.run_perf_alerts(Store.open(resolve_db_url(db)), detector=detector, branch=branch, gpu=gpu,
                                model=model, metrics=metric, save=save)
    for line in pa.undeclared_lines(result):
        typer.echo(line, err=True)
    if as_json:
        print_json(pa.to_json(result, repo))
    else:
        typer.echo("\n".join(pa.summary_lines(result, repo)))
    raise typer.Exit(1 if result.new_regressions else 0)


@app.command("new-failures")
def new_failures(
    run: Annotated[int | None, typer.Option("--run", help="run id (default: latest completed run)")] = None,
    baseline: Annotated[int | None, typer.Option(
        "--baseline", help="baseline run id (default: previous completed run, same branch/runner group/suites)")] = None,
    confirm: Annotated[bool, typer.Option("--confirm/--no-confirm", help="rerun candidates to filter flakes")] = False,
    attempts: Annotated[int, typer.Option("--attempts", help="confirmation reruns per test")] = 3,
    repo: Annotated[str | None, typer.Option("--repo", help="checkout to rerun in (default: runs.repo)")] = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> int:
    """Failures of a run that passed in its baseline (exit 1 when there are new failures)."""
    from harness.triage.command import new_failures_command, to_text

    found = new_failures_command(run_id=run, baseline_id=baseline, confirm=confirm, attempts=attempts, repo=repo,
                                 db=db)
    print_json(found.to_json()) if json_out else typer.echo(to_text(found))
    return 1 if found.new else 0


@app.command("bisect")
def bisect(
    nodeids: Annotated[list[str] | None, typer.Argument(help="test node ids (as --tests)")] = None,
    repo: Annotated[str | None, typer.Option("--repo", help="target git checkout (default: . or runs.repo)")] = None,
    good: Annotated[str | None, typer.Option("--good", help="revision where the tests pass")] = None,
    bad: Annotated[str | None, typer.Option("--bad", help="revision where they fail (default HEAD)")] = None,
    tests: Annotated[list[str] | None, typer.Option("--tests", help="test node id (repeatable)")] = None,
    run: Annotated[int | None, typer.Option("--run", help="bisect this stored run's new failures")] = None,
    workers: Annotated[int, typer.Option("-j", "--workers", help="parallel probes (one worktree/GPU each)")] = 1,
    retries: Annotated[int, typer.Option("--retries", help="attempts at good and bad to filter flakes")] = 3,
    perf: Annotated[str | None, typer.Option("--perf", help="bisect a timing regression of METRIC "
                                                "(duration, or a recorded metric)")] = None,
    threshold: Annotated[str | None, typer.Option("--threshold", help="with --perf: a metric value "
                                                     "between good and bad (0.25) or a relative change (10%)")] = None,
    samples: Annotated[int, typer.Option("--samples", help="initial measurements per probe with --perf")] = 6,
    first_parent: Annotated[bool, typer.Option("--first-parent/--no-first-parent",
                                               help="blame a merged PR as its merge commit")] = True,
    probe_timeout: Annotated[float, typer.Option("--probe-timeout", help="seconds per probe")] = 1800.0,
    store_results: Annotated[bool, typer.Option("--store/--no-store", help="write culprits to the store")] = True,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> int:
    """Find the commit that broke each test (exit 1 when culprits are found)."""
    from harness.triage.bisect_glue import bisect_command

    result = bisect_command(
        repo=repo, good=good, bad=bad, tests=[*(tests or []), *(nodeids or [])], run_id=run, db=db,
        store_results=store_results, progress=None if json_out else (lambda line: typer.echo(line, err=True)),
        workers=workers, retries=retries, perf_metric=perf, threshold=threshold, samples=samples,
        first_parent=first_parent, probe_timeout_s=probe_timeout)
    print_json(result.to_json()) if json_out else typer.echo(result.to_text())
    return 1 if result.culprits else 0


notify_app = typer.Typer(no_args_is_help=True, help="Post run reports.")
app.add_typer(notify_app, name="notify")


@notify_app.command("slack")
def notify_slack_cmd(
    run: Annotated[int | None, typer.Option("--run", help="run id (default: the latest run)")] = None,
    channel: Annotated[str | None, typer.Option("--channel", help="channel (default: SLACK_CHANNEL)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the payload JSON, post nothing")] = False,
    out: Annotated[str | None, typer.Option("--out", help="keep the payload here (default "
                                            ".harness/reports/slack-run-ID.json)")] = None,
    users: Annotated[str | None, typer.Option("--users", help="TOML/JSON map of git emails / GitHub logins "
                                              "to Slack user ids (default: SLACK_USERS_FILE)")] = None,
    db: DbOption = None,
) -> None:
    """Post the run's report to Slack; if Slack is down, keep it as a file and still exit 0."""
    from harness.config import resolve_db_url
    from harness.report.slack import SlackConfig, notify_slack, outcome_line

    result = notify_slack(resolve_db_url(db), SlackConfig.from_env(channel, users), run_id=run,
                          out=out, dry_run=dry_run)
    if dry_run:
        print_json(result.payload)
    else:
        typer.echo(outcome_line(result), err=not result.delivered)


targets_app = typer.Typer(no_args_is_help=True, help="Target repositories under test.")
app.add_typer(targets_app, name="targets")


@targets_app.command("check")
def targets_check(
    repo: Annotated[str, typer.Option("--repo", help="target git repository")] = ".",
    models: Annotated[str, typer.Option("--models", help="comma-separated model names, or 'all'")] = "all",
    suite: Annotated[str | None, typer.Option("--suite", help="suites to explain (default: all that apply)")] = None,
    runner_group: Annotated[str, typer.Option("--runner-group", help="cpu | single-gpu | multi-gpu")] = "cpu",
    as_json: JsonOption = False,
) -> None:
    """Validate a target's description (harness.toml or \\[tool.harness]) and count what each model selects.

    Collects the tests (pytest --collect-only, nothing runs) and prints per model and suite how many are
    selected and attributed; exit 2 when the description selects nothing or everything for a model, or
    names a path, marker or variable that does not exist.
    """
    from harness.run.explain import check, describe
    from harness.run.runner_groups import validate_group

    plan = check(repo, models, suite, validate_group(runner_group))
    print_json(plan.as_json()) if as_json else typer.echo("\n".join(describe(plan)))
    if plan.problems:
        more = f" (and {len(plan.problems) - 1} more problem(s), listed in the output)" if len(plan.problems) > 1 else ""
        raise HarnessError(f"targets check: {plan.problems[0]}{more}")


dashboards_app = typer.Typer(no_args_is_help=True, help="Grafana dashboards as code.")
app.add_typer(dashboards_app, name="dashboards")


@dashboards_app.command("build")
def dashboards_build_cmd(
    out: Annotated[str, typer.Option("--out", help="folder for the dashboard JSON")] = "dashboards/json",
    check: Annotated[bool, typer.Option("--check", help="write nothing; exit 1 if the JSON is stale")] = False,
) -> None:
    """Regenerate the dashboard JSON from harness/report/dashboards/."""
    from harness.report.dashboards import build_dashboards, stale

    if check:
        bad = stale(out)
        typer.echo("\n".join(f"stale: {p}" for p in bad) or f"dashboards in {out} are up to date")
        raise typer.Exit(1 if bad else 0)
    typer.echo("\n".join(f"wrote {p}" for p in build_dashboards(out)))


@dashboards_app.command("push")
def dashboards_push_cmd(
    src: Annotated[str, typer.Option("--out", "--src", help="folder of dashboard JSON")] = "dashboards/json",
    url: Annotated[str | None, typer.Option("--url", help="Grafana URL (default: GRAFANA_URL)")] = None,
    folder: Annotated[str, typer.Option("--folder", help="Grafana folder title")] = "Harness",
    as_json: JsonOption = False,
) -> None:
    """Create or overwrite the dashboards in a Grafana folder (token: GRAFANA_TOKEN)."""
    from dataclasses import asdict

    from harness.report.grafana import GrafanaConfig, push_dashboards

    result = push_dashboards(GrafanaConfig.from_env(url), folder=folder, src=src)
    if as_json:
        print_json(asdict(result))
    else:
        typer.echo("\n".join(f"pushed {d['title']} (version {d['version']}) to folder {folder}"
                             for d in result.dashboards))


pipeline_app = typer.Typer(no_args_is_help=True, help="Whole pipelines: the daily run, CI triage steps.")
app.add_typer(pipeline_app, name="pipeline")


@pipeline_app.command("daily")
def pipeline_daily_cmd(
    repo: Annotated[str, typer.Option("--repo", help="target git repository (tested at HEAD)")] = ".",
    baseline: Annotated[str | None, typer.Option("--baseline", help="revision to run first as the baseline "
                                                 "(default: the store's previous completed run)")] = None,
    models: Annotated[str, typer.Option("--models", help="comma-separated model names, or 'all'")] = "all",
    suite: Annotated[str | None, typer.Option("--suite", help="suites (default: all that apply)")] = None,
    runner_group: Annotated[str | None, typer.Option("--runner-group", help="cpu | single-gpu | multi-gpu")] = None,
    workers: Annotated[int | None, typer.Option("-n", "--workers", help="xdist workers per run")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="per-test timeout in seconds")] = None,
    attempts: Annotated[int, typer.Option("--attempts", help="confirmation reruns per new failure")] = 3,
    bisect_workers: Annotated[int, typer.Option("-j", "--bisect-workers", help="parallel bisect probes")] = 2,
    retries: Annotated[int, typer.Option("--retries", help="bisect attempts at good and bad")] = 3,
    channel: Annotated[str | None, typer.Option("--channel", help="Slack channel (default: SLACK_CHANNEL)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="write the Slack report, post nothing")] = False,
    out: Annotated[str | None, typer.Option("--out", help="keep the Slack payload here")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> int:
    """Baseline run, run, new failures, confirmation, bisect and Slack on this machine (exit 1: new failures).

    Prints one line per step; with --json, one JSON object on stdout (the step lines go to stderr)."""
    from harness.config import resolve_db_url
    from harness.pipeline import DailyRequest, run_daily, summary_line

    result = run_daily(DailyRequest(repo=repo, db_url=resolve_db_url(db), baseline=baseline, models=models,
                                    suites=suite, runner_group=runner_group, workers=workers, timeout=timeout,
                                    attempts=attempts, bisect_workers=bisect_workers, retries=retries,
                                    slack_channel=channel, slack_out=out, dry_run=dry_run),
                       log=lambda line: typer.echo(line, err=as_json))
    print_json(result.to_json()) if as_json else typer.echo(summary_line(result))
    return result.exit_code


@pipeline_app.command("triage-matrix")
def pipeline_triage_matrix_cmd(
    bundles: Annotated[list[str], typer.Argument(help="results bundles (.jsonl) already ingested")],
    db: DbOption = None,
    github_output: Annotated[str | None, typer.Option("--github-output", help="also append matrix= and empty= "
                                                      "to this file (pass \"$GITHUB_OUTPUT\")")] = None,
) -> None:
    """The bisect.yml matrix: ingested runs with candidate new failures, on the runner group that ran them."""
    from harness.config import resolve_db_url
    from harness.pipeline import triage_matrix, write_triage_output

    result = triage_matrix(bundles, resolve_db_url(db))
    if github_output:
        write_triage_output(result, github_output)
    print_json(result)


expectations_app = typer.Typer(no_args_is_help=True, help="Device-keyed expectations of the slow suite.")
app.add_typer(expectations_app, name="expectations")


@expectations_app.command("update")
def expectations_update(
    models: Annotated[str, typer.Option("--models", help="comma-separated model names, or 'all'")] = "all",
    device: Annotated[str | None, typer.Option("--device", help="cpu | cuda | cuda:N (default: what is visible)")] = None,
    repo: Annotated[str, typer.Option("--repo", help="target git repository")] = ".",
) -> None:
    """Re-record the slow suite's expectations on this device and print the diff."""
    from harness.run.expectations import update_expectations

    result = update_expectations(repo, models, device)
    typer.echo(result.diff if result.diff else "expectations unchanged")
    if result.pytest_exit not in (0, 5):
        typer.echo(result.log, err=True)
        raise typer.Exit(1)


# ---- verbs are added above this line -------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and turn a `HarnessError` into one stderr line and exit 2."""
    try:
        result = app(args=argv, standalone_mode=False)
    except HarnessError as exc:
        sys.stderr.write(f"harness: {exc.message}\n")
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        sys.stderr.write("harness: aborted\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("harness: interrupted\n")
        return 130
    except CLICK_ERRORS as exc:  # usage errors arrive here under standalone_mode=False
        if type(exc).__name__ == "NoArgsIsHelpError":
            sys.stdout.write(exc.ctx.get_help() + "\n")
            return 0
        sys.stderr.write(f"harness: {exc.format_message()}\n")
        return 2
    return int(result or 0)


def entry() -> None:
    """Console-script wrapper: exit with `main`'s code."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry()
