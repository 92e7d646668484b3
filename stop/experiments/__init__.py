"""Experiments over improvers: the unsandboxing experiment and transfer to other tasks."""
