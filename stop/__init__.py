"""stop: a recursive self-improving code optimizer with a hardened sandbox."""

__version__ = "0.1.0"
