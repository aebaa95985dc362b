"""The `shallowmimic` command line. It only parses arguments and calls the library; each command
group lives in a module of its own (`cmd_*`)."""

from __future__ import annotations

import click

from shallowmimic.cli import cmd_bench, cmd_data, cmd_models, cmd_study, cmd_tune
from shallowmimic.cli.options import FilesOnly, Group


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shallowmimic")
@click.pass_context
def main(ctx):
    """Shallow students mimicking deep CNN ensembles on CIFAR-10 (Urban et al., ICLR 2017)."""
    if isinstance(main.get_command(ctx, ctx.invoked_subcommand), FilesOnly):
        return
    from shallowmimic.core.device import configure_threads

    configure_threads()


for _command in (cmd_data.data, cmd_models.arch_cmd, cmd_models.teacher, cmd_tune.tune, cmd_models.ensemble_cmd,
                 cmd_models.transfer_cmd, cmd_models.student, cmd_study.run_cmd, cmd_study.status_cmd,
                 cmd_study.report_cmd, cmd_study.export_cmd, cmd_bench.bench):
    main.add_command(_command)
