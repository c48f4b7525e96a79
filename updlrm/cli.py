"""The ``updlrm`` command line.

Each component owns its subcommands; this module only routes to them, and
imports a component when its command is used so that ``updlrm --help`` stays
fast.

Example::

    $ updlrm --help
"""

from __future__ import annotations

import importlib

import click

# name -> "module:attribute" of a click command or group.
_COMMANDS = {
    "demo": ("updlrm.demo:demo_command", "Run the embedding-bag demo and check it against torch."),
    "info": ("updlrm.backends:info_command", "Say which backends exist here and why."),
    "plan": ("updlrm.partitioner.cli:plan_group", "Build, show and evaluate placement plans."),
    "bench": ("updlrm.profile:bench_command", "Per-phase measured and modeled times."),
    "emu": ("updlrm.emulator.cli:emu_group", "Build and run UPMEM SDK programs on the emulator."),
    "serve": ("updlrm.serve.cli:serve_command", "Serve DLRM inference under MLPerf LoadGen (Offline, Server)."),
}


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


@click.group(cls=_LazyGroup)
@click.version_option(package_name="updlrm")
def main() -> None:
    """updlrm: DLRM embedding bags on UPMEM DPUs (hardware, SDK simulator or emulator)."""
