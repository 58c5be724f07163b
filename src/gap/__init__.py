"""GAP: Gamified Adversarial Prompting."""

__version__ = "0.1.0"
