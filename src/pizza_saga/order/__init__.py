"""The pizza order: its data, its menu and prices, and the order saga workflow."""
