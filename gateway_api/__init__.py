"""fedgate front doors: the HTTP API and the `fedgate` CLI."""
