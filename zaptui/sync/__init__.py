"""The sync engine: members of a list or segment to one ZAP~POST submission."""
