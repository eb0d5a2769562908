"""Simulators of Klaviyo and ZAP~POST for tests, benchmarks and the demo."""
