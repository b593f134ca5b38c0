"""Reading run records into result tables and plots (application layer)."""
