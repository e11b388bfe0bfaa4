"""YAML configuration -> validated, frozen :class:`Settings` (CONTRACT section 2).

Use :func:`load_settings` for a file or :func:`load_settings_from_text` for a string; both raise
:class:`ConfigError` listing every problem, each with its YAML path.
"""

from gateway.config.errors import ConfigError, ConfigIssue
from gateway.config.loader import load_settings, load_settings_from_text
from gateway.config.settings import Settings
from gateway.config.units import parse_duration, parse_size

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "Settings",
    "load_settings",
    "load_settings_from_text",
    "parse_duration",
    "parse_size",
]
