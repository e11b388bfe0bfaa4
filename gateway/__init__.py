"""gateway: an authentication reverse proxy."""

__version__ = "0.1.0"
