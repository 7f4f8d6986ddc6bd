"""Built-in data: a synthetic interaction-log generator."""
