"""The comparison report of finished runs."""
