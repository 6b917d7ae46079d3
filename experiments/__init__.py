"""Thin entry points: `python -m experiments.<name>` from the repository root."""
