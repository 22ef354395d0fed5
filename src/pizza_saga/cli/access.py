"""`pizza operator add|list|revoke`: the operators' API keys (and page logins).

The CLI itself needs none: it is the operator on the machine, with the store and Temporal
at hand. Every change is in the audit trail, by the machine's user.
"""

from __future__ import annotations

import getpass
import json
from typing import TYPE_CHECKING, Annotated

import typer

from pizza_saga.cli._shared import app, fail, load_settings, out, print_json, run_command

if TYPE_CHECKING:
    from pizza_saga.access.service import AccessService, Actor

operator_app = typer.Typer(
    help="Operators' API keys for the HTTP API and the pages.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(operator_app, name="operator")


def _access() -> AccessService:
    from pizza_saga.app import build_access, open_stores

    return build_access(open_stores(load_settings()))


def _me() -> Actor:
    from pizza_saga.access.service import Actor

    return Actor.operator(f"cli:{getpass.getuser()}", source="cli")


@operator_app.command("add")
def add(name: Annotated[str, typer.Argument(help="Who the key is for (alice, ops@shop).")]) -> None:
    """Make an API key for operator NAME; it is printed once, never again."""
    from pizza_saga.access.store import InvalidOperator

    access = _access()
    try:
        key, secret = run_command(access.add_operator(name, by=_me()))
    except InvalidOperator as e:
        fail(str(e))
    out.print(f"Operator key {key.key_id} for {key.name}. Keep it now, it is not shown again:")
    print(secret)  # plain, for a script or a password manager
    out.print("Send it as `Authorization: Bearer <key>`, or log in with it at /login.")


@operator_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Print as a JSON list.")] = False,
) -> None:
    """Every operator key (never the secrets): id, operator, made, revoked."""
    keys = run_command(_access().operator_keys())
    if as_json:
        print_json(
            json.dumps(
                [
                    {
                        "key_id": k.key_id,
                        "name": k.name,
                        "created_at": k.created_at.isoformat(),
                        "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
                    }
                    for k in keys
                ]
            )
        )
        return
    if not keys:
        out.print("No operator keys; make one with `pizza operator add NAME`.")
    for k in keys:
        state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
        out.print(f"{k.key_id}  {k.name:<24} made {k.created_at:%Y-%m-%d %H:%M}  {state}")


@operator_app.command("revoke")
def revoke(
    which: Annotated[str, typer.Argument(help="A key id, or an operator's name (all keys).")],
) -> None:
    """Revoke a key, or every key of an operator: refused at once by the API and the pages."""
    from pizza_saga.access.store import InvalidOperator

    try:
        revoked = run_command(_access().revoke(which, by=_me()))
    except InvalidOperator as e:
        fail(str(e))
    for k in revoked:
        out.print(f"Revoked {k.key_id} ({k.name}).")
