"""Persistence: peewee models, database opening, migrations and secrets."""
