"""The simulated world's outside: a ChatGPT backend (`upstream`) and an alert webhook receiver
(`alert_sink`), both on 127.0.0.1. Imports nothing of ours."""

__all__ = ["alert_sink", "upstream"]
