"""The console tabs, one module each."""
