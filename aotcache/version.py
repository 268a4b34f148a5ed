"""The package version, in a module of its own so that every wing can read it without
importing the package's public face (which imports the wings)."""

__version__ = "0.1.0"
