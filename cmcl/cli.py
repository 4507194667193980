"""The ``cmcl`` command line: thin wrappers that parse, call and print."""

from __future__ import annotations

import os
import sys
import traceback

import click

from cmcl import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="cmcl")
@click.option(
    "--verbose",
    is_flag=True,
    help="On an error, show the traceback behind the one-line 'Error:' message "
    "(also CMCL_VERBOSE=1).",
)
def cli(verbose: bool) -> None:
    """Cross-modal contrastive video domain adaptation (Kim et al., ICCV 2021) on Ray.

    \b
    Train one run:        cmcl train --benchmark synthetic-epic --pair D2-D1 --method cmco
    List the methods:     cmcl methods
    Run a study:          cmcl study run studies/quickstart.yaml
    Write a report:       cmcl report STUDY_DIR --out reports/NAME
    Extract features:     cmcl features extract --benchmark epic --root FRAMES --out STORE ...
    Track in MLflow:      cmcl train ... --tracking mlflow; cmcl track sync DIR --tracking mlflow

    Bad input (a missing or damaged file, a wrong setting, a read-only directory)
    ends with one line, 'Error: ...', naming the file or key and what to do, and
    exit status 1; --verbose (before the command) adds the traceback.
    """


def _register() -> None:
    # Each command group lives in its own module under cmcl/commands/; heavy
    # imports happen inside the commands, so `cmcl --help` stays fast.
    from cmcl.commands.data import data
    from cmcl.commands.features import features
    from cmcl.commands.report import report_command
    from cmcl.commands.study import study
    from cmcl.commands.track import track
    from cmcl.commands.train import methods, train

    for command in (train, methods, report_command, data, features, study, track):
        cli.add_command(command)


_register()


VERBOSE_ENV = "CMCL_VERBOSE"
"""Set to 1 (or pass --verbose) to get the traceback behind an ``Error:`` line."""


def _expected(error: BaseException) -> bool:
    """Bad input or a bad environment, whose message names the file, row, frame or key.

    The project's own error classes count, wherever they derive from; any other
    exception is a bug in cmcl (or below it) and keeps its traceback.
    """
    if isinstance(error, ValueError | OSError):  # OSError: missing, unreadable, read-only, full
        return True
    return any(kind.__module__.startswith("cmcl.") for kind in type(error).__mro__)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; expected errors become one ``Error:`` line on stderr and exit status 1."""
    args = list(sys.argv[1:] if argv is None else argv)
    leading = args[: next((i for i, a in enumerate(args) if not a.startswith("-")), len(args))]
    verbose = "--verbose" in leading or os.environ.get(VERBOSE_ENV, "") not in ("", "0")
    try:
        code = cli.main(args=args, prog_name="cmcl", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(1)
    except click.ClickException as error:
        # Commands turn expected errors into ClickExceptions themselves; the one
        # they were handling is still attached, and its traceback is what --verbose asks for.
        behind = error.__cause__ or error.__context__
        if verbose and behind is not None:
            traceback.print_exception(behind)
        error.show()
        sys.exit(error.exit_code)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except Exception as raised:
        from cmcl.commands.errors import error_message, original_error

        if verbose or not _expected(original_error(raised)):
            raise
        click.echo(f"Error: {error_message(raised)}", err=True)
        click.echo(f"(cmcl --verbose ... or {VERBOSE_ENV}=1 shows the traceback)", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
