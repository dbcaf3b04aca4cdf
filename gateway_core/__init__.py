"""fedgate domain: settings, jobs, store, adapters, policies. Importable without a running worker."""

__version__ = "0.1.0"
