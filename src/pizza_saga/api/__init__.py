"""The HTTP face of the order service: a JSON API and the web pages, one FastAPI app.

Routes call `OrderService` and nothing else; its typed errors become RFC 9457 problem
responses (`problems.py`). `create_app` is the only thing other modules use.
"""

from pizza_saga.api.app import create_app

__all__ = ["create_app"]
