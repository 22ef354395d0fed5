"""What a new user meets first, with no Temporal running: `--help`, `pizza payments`, and
the one line that says Temporal cannot be reached.

Help is read in-process (typer's CliRunner, every command of the app); the rest runs
`pizza` as a process on a PIZZA_HOME of its own (the embedded SQLite store).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from temporal_saga.effects import EffectKey
from typer.core import TyperGroup
from typer.testing import CliRunner

from pizza_saga.app import open_stores
from pizza_saga.billing.activities import CHARGE_STEP
from pizza_saga.cli import app
from pizza_saga.common.ports import free_port
from pizza_saga.common.settings import Settings

COMMAND_SECONDS = 60


def _command_paths(group: TyperGroup, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command's words (("order",), ("db", "upgrade"), ...), groups too."""
    for name, command in group.commands.items():
        path = (*prefix, name)
        yield path
        if isinstance(command, TyperGroup):
            yield from _command_paths(command, path)


def _all_commands() -> list[tuple[str, ...]]:
    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    return [(), *_command_paths(root)]


COMMANDS = _all_commands()


@pytest.mark.parametrize("words", COMMANDS, ids=[" ".join(("pizza", *w)) for w in COMMANDS])
def test_help_shows_flags_as_flags_not_as_taking_a_bool(words: tuple[str, ...]) -> None:
    shown = CliRunner().invoke(app, [*words, "--help"])

    assert shown.exit_code == 0, shown.output
    assert "<bool>" not in shown.output, shown.output
    assert "--help" in shown.output


def test_order_help_lists_its_flags_bare() -> None:
    shown = CliRunner().invoke(app, ["order", "--help"])

    lines = [line.split() for line in shown.output.splitlines()]
    for flag in ("--no-wait", "--json", "--example", "--help"):
        [words] = [words for words in lines if words and words[0] == flag]
        assert not words[1].startswith("<"), words  # its help follows, not a value


def _pizza(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pizza_saga", *args],
        env={**os.environ, "PIZZA_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=COMMAND_SECONDS,
        stdin=subprocess.DEVNULL,
    )


def test_payments_help_says_the_table_is_in_dollars_as_it_shows_them(tmp_path: Path) -> None:
    stores = open_stores(Settings.from_env({"PIZZA_HOME": str(tmp_path)}))
    stores.payments.charge(
        EffectKey(key="XD1234", step=CHARGE_STEP, owner="pizza-workflow-order-XD1234/run"),
        3500,
        "4242",
    )
    stores.engine.dispose()

    help_text = " ".join(_pizza(tmp_path, "payments", "--help").stdout.split())
    table = _pizza(tmp_path, "payments")
    listed = json.loads(_pizza(tmp_path, "payments", "--json").stdout)

    assert "amounts in dollars ($35.00; with --json in cents)" in help_text, help_text
    assert "--json Print as a JSON list, amounts in cents (3500)." in help_text, help_text
    assert "$35.00" in table.stdout and "3500" not in table.stdout, table.stdout
    assert [(p["order_number"], p["amount"]) for p in listed] == [("XD1234", 3500)]


@pytest.mark.parametrize(
    "command",
    [["status", "XD1234"], ["order"], ["cancel", "XD1234"], ["needs-operator"]],
    ids=" ".join,
)
def test_unreachable_temporal_is_one_line_naming_the_address_and_what_to_do(
    tmp_path: Path, command: list[str]
) -> None:
    address = f"127.0.0.1:{free_port()}"

    done = _pizza(tmp_path, *command, TEMPORAL_ADDRESS=address)

    assert done.returncode == 3, (done.stdout, done.stderr)
    assert done.stderr.strip() == (
        f"error: cannot reach Temporal at {address} (Connection refused): start it with "
        "`pizza server`, or set TEMPORAL_ADDRESS to where it runs"
    )
