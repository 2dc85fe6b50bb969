"""csrl.data."""
