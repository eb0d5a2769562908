"""zaptui: operator console and sync service for ZAP~POST's Klaviyo integration."""

__version__ = "0.1.0"
