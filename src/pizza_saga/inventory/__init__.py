"""Inventory: pizzas on hand, reserved by orders and released by their rollback."""
