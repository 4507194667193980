"""The ``cmcl`` command line: thin wrappers that parse, call and print."""

from __future__ import annotations

import sys

import click

from cmcl import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="cmcl")
def cli() -> None:
    """Cross-modal contrastive video domain adaptation (Kim et al., ICCV 2021) on Ray.

    \b
    Train one run:        cmcl train --benchmark synthetic-epic --pair D2-D1 --method cmco
    List the methods:     cmcl methods
    Run a study:          cmcl study run studies/quickstart.yaml
    Write a report:       cmcl report STUDY_DIR --out reports/NAME
    Extract features:     cmcl features extract --benchmark epic --root FRAMES --out STORE ...
    """


def _register() -> None:
    # Each command group lives in its own module under cmcl/commands/; heavy
    # imports happen inside the commands, so `cmcl --help` stays fast.
    from cmcl.commands.data import data
    from cmcl.commands.features import features
    from cmcl.commands.report import report_command
    from cmcl.commands.study import study
    from cmcl.commands.train import methods, train

    for command in (train, methods, report_command, data, features, study):
        cli.add_command(command)


_register()


def main() -> None:
    cli(prog_name="cmcl")


if __name__ == "__main__":
    sys.exit(main())
