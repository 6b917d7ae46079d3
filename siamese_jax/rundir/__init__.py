"""A run's directory: its lock, config.json, checkpoints, metric writers and results."""
