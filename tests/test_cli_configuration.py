"""Commands on a misconfigured deployment say what is missing in one line, and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pizza_saga.app import upgrade_stores
from pizza_saga.common.db import open_engine
from pizza_saga.common.settings import Settings


@pytest.mark.parametrize("command", [["inventory"], ["payments"], ["worker"]])
def test_a_shared_store_without_a_vault_key_is_one_line_not_a_traceback(
    postgres_url: str, tmp_path: Path, command: list[str]
) -> None:
    engine = open_engine(postgres_url, pool_size=1)
    upgrade_stores(engine)
    engine.dispose()
    env = {
        k: v for k, v in os.environ.items() if k not in ("PIZZA_VAULT_KEYS", "PIZZA_VAULT_KEY_FILE")
    }
    env.update(PIZZA_HOME=str(tmp_path), PIZZA_DATABASE_URL=postgres_url)

    done = subprocess.run(
        [sys.executable, "-m", "pizza_saga", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )

    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    [line] = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert "no card vault key configured for a shared store database" in line
    assert "PIZZA_VAULT_KEY_FILE" in line


def test_workers_keep_the_sdk_sandbox_unless_a_deployment_opts_out() -> None:
    assert Settings.from_env({}).workflow_sandbox
    assert not Settings.from_env({"PIZZA_WORKFLOW_SANDBOX": "false"}).workflow_sandbox
