"""Who may do what: operators (API keys, page sessions), customers (a token per order), and
the audit trail of what operators did."""
