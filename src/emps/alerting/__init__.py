"""Alerts, maintenance tasks and notifications: plain functions the alert flows call."""
