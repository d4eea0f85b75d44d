"""The ``stereodistill`` command line. Each command lives in its own module next to this one."""

from __future__ import annotations

import sys

import click

from stereodistill import __version__
from stereodistill.errors import StereoDistillError
from stereodistill.files import disk_full_message, is_disk_full


class _Group(click.Group):
    """Prints :class:`StereoDistillError` (and a full disk) as one line on stderr and exits 1, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except StereoDistillError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(1)
        except OSError as err:
            if not is_disk_full(err):
                raise
            click.echo(f"error: {disk_full_message(err)}", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="stereodistill")
def main() -> None:
    """StereoDistill: LiDAR-teacher to stereo-student distillation with a cached teacher."""


# Commands, each defined in its own module (imports at the bottom: they need `main` defined above only
# through this registration).
from stereodistill.cli.cache import cache, cache_teacher  # noqa: E402
from stereodistill.cli.data import data, prepare  # noqa: E402
from stereodistill.cli.evaluate import breakdown, evaluate  # noqa: E402
from stereodistill.cli.student import pretrain_student, student, train_student  # noqa: E402
from stereodistill.cli.synth import synth  # noqa: E402
from stereodistill.cli.teacher import teacher, train_teacher  # noqa: E402

main.add_command(synth)
main.add_command(data)
main.add_command(prepare)
main.add_command(evaluate)
main.add_command(breakdown)
main.add_command(train_teacher)
main.add_command(teacher)
main.add_command(cache_teacher)
main.add_command(cache)
main.add_command(pretrain_student)
main.add_command(train_student)
main.add_command(student)
