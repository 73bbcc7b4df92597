"""Webhook actions: rendering (``render``) and delivery through the outbox (``worker``)."""
