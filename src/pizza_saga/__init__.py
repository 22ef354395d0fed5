"""pizza-saga: a pizza order service on Temporal whose orders run as sagas."""
