"""The `harness` command line: parses arguments and calls the library. Imported by nothing.

Exit codes: 0 success; 1 the work ran and found failures; 2 bad input or unusable environment
(one line on stderr, from the single `HarnessError` handler in `main`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from harness.errors import HarnessError

# typer vendors click; its ClickException is the base of BadParameter, whichever copy is in use.
CLICK_ERRORS = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

app = typer.Typer(name="harness", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="CI and regression tracking for ML model correctness and performance.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema management.")
app.add_typer(db_app, name="db")

DbOption = Annotated[Optional[str], typer.Option("--db", help="database URL (default: HARNESS_DB_URL, "
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
