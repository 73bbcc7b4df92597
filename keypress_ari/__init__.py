"""keypress-ari: key press call control for Asterisk over ARI."""

__version__ = "0.2.0"
