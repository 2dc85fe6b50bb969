"""csrl.train."""
