"""Training the dynamics model from logged robot data (online in the trainer node, or offline)."""
