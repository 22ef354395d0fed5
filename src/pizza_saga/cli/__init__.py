"""The `pizza` command: thin faces over the order service and the composition root.

One module per group of commands; `_shared` holds what they share (consoles, exit
statuses, the one mapping of errors to them, settings, the Temporal connection).
"""

# Imported in this order, the commands are listed in `pizza --help` in this order.
from pizza_saga.cli import servers, services, orders, shop, operate, access, deploy  # noqa: I001
from pizza_saga.cli._shared import UserError, app, main

__all__ = [
    "UserError",
    "access",
    "app",
    "deploy",
    "main",
    "operate",
    "orders",
    "servers",
    "services",
    "shop",
]
