"""Reference harness for preference-learning ablations (data x algorithm x reward model x prompts)."""

__version__ = "0.1.0"
