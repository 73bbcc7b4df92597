"""keypress-ari."""
