"""Conveyor's version, in a module of its own so that every layer can report it without importing the package's
public face (`conveyor/__init__.py` imports the app, the app the worker: reading the version must not)."""

__version__ = "0.1.0"
