"""The package version, alone in a module so that writers and the build read it without importing anything else."""

__version__ = "0.1.0"
