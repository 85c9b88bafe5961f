"""hematoma: predict hematoma expansion after intracerebral hemorrhage."""

__version__ = "0.1.0"
