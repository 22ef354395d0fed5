"""`pizza bench`: the order saga's speed, measured against the engine's own limit."""
