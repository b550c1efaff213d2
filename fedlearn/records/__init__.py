"""Run records: the run directory, per-round checkpoints and model fingerprints."""
