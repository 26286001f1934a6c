"""Neutral helpers every layer may use: seeding and device choice, progress bars, run info files."""
