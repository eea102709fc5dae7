"""How every `harness` sub-command prints an error it expects. Below the command modules: `harness.cli`
(which also prints the errors nothing caught) and each module that adds sub-commands import it."""

from __future__ import annotations

import argparse
import sys


def print_error(exc: BaseException, verbose: bool | argparse.Namespace, label: str = "error") -> None:
    """`error: <message>` on stderr, after the traceback when `verbose` (a bool, or the parsed arguments
    whose `verbose` main() set): what every sub-command prints for an error it expects."""
    import traceback

    if isinstance(verbose, argparse.Namespace):
        verbose = bool(getattr(verbose, "verbose", False))
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    print(f"{label}: {str(exc).strip() or type(exc).__name__}", file=sys.stderr)
