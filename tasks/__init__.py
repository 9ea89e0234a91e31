"""Celery app, thin tasks, and the client the web process uses to submit, poll and cancel jobs."""
