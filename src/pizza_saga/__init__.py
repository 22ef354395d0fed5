"""pizza-saga: a pizza order service on Temporal whose orders run as sagas."""

TASK_QUEUE = "pizza-tasks"
"""The task queue the worker polls and every order is started on."""
