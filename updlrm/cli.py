"""The ``updlrm`` command line.

Each component owns its subcommands; this module only routes to them, and
imports a component when its command is used so that ``updlrm --help`` stays
fast.

It is also the one place that turns errors into what a user sees: a usage
error (a bad option, a wrong type, a missing file argument) prints one line and
exits 2; a user-caused failure (a plan or trace that does not fit, an unavailable
backend, a missing optional dependency, an unreadable file, a kernel fault) prints
one line and exits 1. Neither prints a traceback (``UPDLRM_DEBUG=1`` shows it);
anything else is a bug and keeps its traceback.

Example:
    >>> from click.testing import CliRunner
    >>> r = CliRunner().invoke(main, ["demo", "--profile", "upmem-9000"])
    >>> r.exit_code, r.output.count("\\n"), "Traceback" in r.output
    (2, 1, False)
"""

from __future__ import annotations

import importlib
import os
import sys

import click

# name -> "module:attribute" of a click command or group.
_COMMANDS = {
    "demo": ("updlrm.demo:demo_command", "Run the embedding-bag demo and check it against torch."),
    "info": ("updlrm.backends:info_command", "Say which backends exist here and why."),
    "plan": ("updlrm.partitioner.cli:plan_group", "Build, show and evaluate placement plans."),
    "bench": ("updlrm.bench:bench_command", "Per-phase measured and modeled times."),
    "emu": ("updlrm.emulator.cli:emu_group", "Build and run UPMEM SDK programs on the emulator."),
    "serve": ("updlrm.serve.cli:serve_command", "Serve DLRM inference under MLPerf LoadGen (Offline, Server)."),
}

EXIT_FAILURE = 1
EXIT_USAGE = 2
# click >= 8.2 raises this (a UsageError) for a group called without a command.
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the input or the environment is wrong", not "updlrm has a bug".

    ValueError covers PlanError, TraceError and the API's InvalidInputError; RuntimeError
    subclasses are named one by one (a bare RuntimeError stays a bug).
    """
    from updlrm.backends import BackendUnavailable
    from updlrm.emulator._build import BuildError
    from updlrm.emulator._compiler import CompileError
    from updlrm.emulator._dpuset import DpuError
    from updlrm.host.engine import EngineError
    from updlrm.partitioner.graphpart import MissingDependency

    return (
        ValueError,
        OSError,
        MemoryError,
        BackendUnavailable,
        MissingDependency,
        EngineError,
        DpuError,
        CompileError,
        BuildError,
    )


def one_line(error: BaseException) -> str:
    """The message of ``error`` as one line: ``OSError`` as "file: reason", whitespace runs collapsed.

    >>> one_line(FileNotFoundError(2, "No such file or directory", "plan.npz"))
    'plan.npz: No such file or directory'
    >>> one_line(ValueError("two\\n  lines"))
    'two lines'
    """
    if isinstance(error, OSError) and error.strerror:
        text = f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    elif isinstance(error, MemoryError):
        text = f"out of memory{': ' + str(error) if str(error) else ''}; try smaller sizes"
    elif isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
        text = error.args[0]
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in _COMMANDS:
            return None
        module_name, attribute = _COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(module_name), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_text) for name, (_, help_text) in sorted(_COMMANDS.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            # Not standalone, click returns what it would exit with (an Exit's code, or
            # the command's return value) and raises the errors, which are mapped below.
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP as e:  # a bare group: its help, as click shows it
            e.show()
            sys.exit(e.exit_code)
        except click.UsageError as e:
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            _fail(f"Error: {' '.join(e.format_message().split())}{hint}", EXIT_USAGE)
        except click.ClickException as e:
            if os.environ.get("UPDLRM_DEBUG"):
                raise
            _fail(f"Error: {e.format_message()}", e.exit_code)
        except click.Abort:
            _fail("Aborted.", EXIT_FAILURE)
        except KeyboardInterrupt:
            _fail("Interrupted.", 130)
        except _user_error_types() as e:
            if os.environ.get("UPDLRM_DEBUG"):
                raise
            _fail(f"Error: {one_line(e)}", EXIT_FAILURE)
        sys.exit(rv if isinstance(rv, int) else 0)


def _fail(message: str, code: int) -> None:
    click.echo(message, err=True)
    sys.exit(code)


@click.group(cls=_LazyGroup)
@click.version_option(package_name="updlrm")
def main() -> None:
    """updlrm: DLRM embedding bags on UPMEM DPUs (hardware, SDK simulator or emulator).

    Errors print one line (exit 2: bad usage, 1: failure); UPDLRM_DEBUG=1 adds the traceback.
    """
