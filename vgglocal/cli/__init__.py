"""The ``vgglocal`` command line: a click group; each command parses, loads a config and calls
one library function. User errors become one line and exit status 2."""

from __future__ import annotations

import os
import sys

import click

from vgglocal.errors import UserError

__all__ = ["main", "cli", "config_default"]


class _Group(click.Group):
    """Turns user errors into one-line messages (set VGGLOCAL_DEBUG=1 for the traceback)."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (UserError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
            if os.environ.get("VGGLOCAL_DEBUG"):
                raise
            msg = str(e) if isinstance(e, UserError) else f"{e.strerror}: {e.filename}"
            click.echo(f"error: {msg}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="vgglocal")
def cli() -> None:
    """Object localisation and detection with very deep VGG ConvNets (Simonyan & Zisserman,
    ICLR 2015, Appendix A).

    Typical sequence: `data check` → `train-cls` → `train-loc` → `eval` → `score`; then
    `predict` on your own images, `export` for serving, `plot` for the learning curves.
    """


def config_default(key: str) -> str:
    """``--help`` text for an option that falls back to config key ``key`` (``"eval.flip"``):
    the built-in value and where a config changes it, e.g. ``[default: full, or eval.protocol of -c]``."""
    from vgglocal.config import Config  # dataclasses and yaml only: no torch

    value = Config()
    for part in key.split("."):
        value = getattr(value, part)
    if isinstance(value, bool):
        text = str(value).lower()
    elif value in ("", ()):
        text = "none"
    elif isinstance(value, tuple):
        text = ",".join(str(v) for v in value)
    else:
        text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"[default: {text}, or {key} of -c]"


# Command modules import only click and the standard library at the top; torch and the library
# layers load inside each command function, so `--help` and usage errors answer at once
# (tests/test_cli.py checks that importing vgglocal.cli leaves torch unimported).
_COMMAND_MODULES = ("models", "data", "train", "eval", "transfer")


def _register() -> None:
    # Each command lives with its topic; importing the module adds it to the group.
    import importlib

    for module in _COMMAND_MODULES:
        importlib.import_module(f"vgglocal.cli.{module}")


_register()


def main() -> None:
    from vgglocal.interrupts import quiet_interrupts
    from vgglocal.threads import apply_default_threads

    quiet_interrupts()
    apply_default_threads()  # before torch starts its thread pools: the usable cores, not the host's
    cli(prog_name="vgglocal")
