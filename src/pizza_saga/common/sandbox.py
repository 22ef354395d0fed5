"""The SDK's workflow sandbox, kept cheap.

The sandbox imports a workflow's module afresh for every run (its package's ``__init__``
modules too), so that no run sees another's module globals; what the module imports inside
``workflow.unsafe.imports_passed_through()`` is shared. A fresh import reads the module's
cached bytecode, or compiles its source when there is none: with ``PYTHONDONTWRITEBYTECODE``
set or an install that wrote no bytecode, every order would compile its workflow module
again (measured here: 1.3 ms of the 3 ms a sandboxed run takes to start).
"""

from __future__ import annotations

import compileall
import sys
from collections.abc import Iterable

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner


def sandbox_runner(workflows: Iterable[type]) -> SandboxedWorkflowRunner:
    """The SDK's sandboxed runner, with the bytecode of the modules it re-imports for each
    run of ``workflows`` cached on disk (written where missing or stale)."""
    for module in sorted({name for cls in workflows for name in _reimported(cls.__module__)}):
        path = getattr(sys.modules.get(module), "__file__", None)
        if path is not None:
            # Skips a fresh cache; a directory it cannot write leaves it as it was.
            compileall.compile_file(path, quiet=2)
    return SandboxedWorkflowRunner()


def _reimported(module: str) -> list[str]:
    """The module and the packages above it, which a run's import of it executes."""
    parts = module.split(".")
    return [".".join(parts[: n + 1]) for n in range(len(parts))]
