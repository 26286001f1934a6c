"""Evaluation: full-ranking metrics on plain arrays and the leave-one-out protocol."""
