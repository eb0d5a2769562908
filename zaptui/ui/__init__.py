"""The console: a thin Textual layer over the operator services."""
