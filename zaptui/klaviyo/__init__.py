"""The Klaviyo API client, its errors and its rate limiter."""
