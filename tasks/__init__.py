"""The built-in tasks, one folder each; shipped in the wheel as package data."""
