"""csrl.cli."""
