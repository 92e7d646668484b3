"""Runs on disk: the store, the event log and its schema, summaries, replay."""
