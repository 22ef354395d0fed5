"""Billing: charging the card, refunding it on rollback, and billing the customer."""
