"""dbha: a high-availability supervisor for database pairs in mirror mode."""

__version__ = "0.1.0"
