"""`pizza operator add|list|revoke`, and the CLI's own rules of who may do what: a skip names
its operator; an API open to the network needs an operator key first."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from pizza_saga.app import open_stores
from pizza_saga.common.devserver import ensure_free
from pizza_saga.common.ports import free_port
from pizza_saga.common.settings import Settings
from tests.processes import run_pizza

pytestmark = pytest.mark.processes


def pizza(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`pizza ARGS` with no Temporal to reach (these commands must not need one)."""
    return run_pizza(home, *args, TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}")


def test_an_operator_key_is_shown_once_works_and_is_revoked(tmp_path: Path) -> None:
    home = tmp_path / "home"
    made = pizza(home, "operator", "add", "alice")
    assert made.returncode == 0, made.stderr
    key = next(line for line in made.stdout.splitlines() if line.startswith("pzop_"))
    operators = open_stores(Settings.from_env({"PIZZA_HOME": str(home)})).operators
    assert operators.authenticate(key) is not None

    listed = pizza(home, "operator", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [entry] = json.loads(listed.stdout)
    assert entry["name"] == "alice" and entry["revoked_at"] is None
    assert key not in listed.stdout and key.split("_", 2)[2] not in listed.stdout

    revoked = pizza(home, "operator", "revoke", "alice")
    assert revoked.returncode == 0, revoked.stderr
    assert operators.authenticate(key) is None
    again = pizza(home, "operator", "revoke", "alice")
    assert again.returncode == 2 and "no active operator key" in again.stderr
    assert "Traceback" not in again.stderr
    audit = open_stores(Settings.from_env({"PIZZA_HOME": str(home)})).audit.entries()
    assert [e.action for e in audit] == ["operator.revoke", "operator.add"]


def test_a_bad_operator_name_is_refused_naming_the_field(tmp_path: Path) -> None:
    done = pizza(tmp_path / "home", "operator", "add", "al ice")
    assert done.returncode == 2
    assert done.stderr.startswith("error: name: ") and "Traceback" not in done.stderr
    listed = pizza(tmp_path / "home", "operator", "list", "--json")
    assert json.loads(listed.stdout) == []


def test_a_skip_names_its_operator_before_anything_happens(tmp_path: Path) -> None:
    done = pizza(tmp_path / "home", "resolve", "X1", "--skip", "--reason", "refunded by hand")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: --operator: ")
    assert "Traceback" not in done.stderr
    bad = pizza(tmp_path / "home", "resolve", "X1", "--skip", "--reason", "r", "--operator", "a b")
    assert bad.returncode == 2 and bad.stderr.startswith("error: --operator: ")


@pytest.mark.parametrize("command", ["api", "up"])
def test_an_api_open_to_the_network_needs_an_operator_key(tmp_path: Path, command: str) -> None:
    home = tmp_path / "home"
    port = free_port()
    args = ["--host", "0.0.0.0", "--port" if command == "api" else "--api-port", str(port)]
    if command == "up":
        args += ["--port", str(free_port()), "--ui-port", str(free_port())]
        args += ["--codec-port", str(free_port())]
    done = pizza(home, command, *args)

    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "--host 0.0.0.0: the API would be open to the network with no operator key" in (
        done.stderr
    )
    assert len(done.stderr.strip().splitlines()) == 1
    ensure_free({"api": port}, "0.0.0.0")


def test_what_the_product_writes_is_its_owners_alone(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert pizza(home, "operator", "add", "alice").returncode == 0

    assert home.stat().st_mode & 0o077 == 0, oct(home.stat().st_mode)
    written = [p for p in home.rglob("*") if p.is_file()]
    assert written
    for path in written:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is {oct(path.stat().st_mode)}"
