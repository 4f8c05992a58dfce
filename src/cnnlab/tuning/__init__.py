"""Hyperparameter search over a preset's settings (`cnnlab search`): the space (`space`), the trials and their
study (`search`), and what the report says of them (`summary`)."""
