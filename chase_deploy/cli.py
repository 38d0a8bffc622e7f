"""The ``chase-deploy`` command group: one subcommand per module in ``chase_deploy.commands``.

Exit codes: 0 success, 2 bad usage or bad input (one line saying what and how to fix it),
1 internal failure.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import click

from chase_deploy import __version__


def _check_train_package() -> None:
    """A user's own ``train.py`` in the working directory can shadow our ``train`` package."""
    try:
        import train
    except ImportError as e:  # pragma: no cover - broken install
        raise SystemExit(
            f"error: cannot import chase-deploy's `train` package ({e}); reinstall chase-deploy"
        ) from e
    if not getattr(train, "CHASE_DEPLOY_TRAIN", False):
        where = getattr(train, "__file__", None) or "an unknown location"
        click.echo(
            f"error: the module `train` imported from {where} is not chase-deploy's; a file or "
            f"folder named `train` in the working directory shadows it: rename it or run elsewhere",
            err=True,
        )
        sys.exit(2)


class App(click.Group):
    def main(self, *args, **kwargs):
        _check_train_package()
        _register()  # after the check: the commands import our `train`
        return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context):
        """Bad input, including a bad flag value (``commands.params.FlagError``): one line, exit 2."""
        from train.errors import BadInput

        try:
            return super().invoke(ctx)
        except BadInput as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(2)


@click.group(
    cls=App, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, prog_name="chase-deploy")
def main() -> None:
    """Train CNNs with Chase, slim them in ONNX, build TensorRT engines, benchmark the speedup.

    \b
    chase-deploy run recipes/quickstart.yaml          # the whole job, with report.md
    chase-deploy train recipes/quickstart.yaml        # Chase training only
    chase-deploy slim runs/quickstart/final.pt        # dense.onnx + slim.onnx, verified
    chase-deploy bench dense.onnx slim.onnx           # latency / throughput / speedup
    """


def _register() -> None:
    """Add every ``chase_deploy.commands`` module's ``command`` (once)."""
    import chase_deploy.commands as pkg

    if main.commands:
        return
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"chase_deploy.commands.{info.name}")
        command = getattr(module, "command", None)
        if isinstance(command, click.Command):
            main.add_command(command)
