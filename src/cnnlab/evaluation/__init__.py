"""Scoring a model: test metrics, common corruptions, statistics and the figures of a run."""
