"""csrl.analysis."""
