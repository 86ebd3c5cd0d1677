"""Training datasets: plans, shards, resume, readers, preview and the CLI."""
