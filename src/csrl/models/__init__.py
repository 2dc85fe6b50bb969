"""csrl.models."""
