"""The SQL registry."""
