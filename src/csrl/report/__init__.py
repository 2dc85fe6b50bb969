"""csrl.report."""
