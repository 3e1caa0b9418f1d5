"""Alert delivery without a script: the pool's alerts POSTed to signed webhooks and ntfy topics.

`settings` reads which sinks are configured, `sinks` builds what each one is sent (and verifies a
webhook signature), `deliverer` queues and sends in the background with retries.
"""

__all__ = ["deliverer", "settings"]
