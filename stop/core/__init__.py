"""The self-improvement loop, the improver runs and the meta-utility, their settings and statistics."""
