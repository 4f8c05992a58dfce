"""The run directory, the unit of work: `run.Run` is the one reader and writer of its files (`rundir` names them and
holds the lock; `history`, `predictions` and `provenance` are the formats of three of them)."""
