"""What people read after a run: the dataset card (and, later, the HTML report)."""
