"""csrl.evaluate."""
