"""Training: one engine (events, checkpoints, resume) shared by the CLI and the GUI."""
