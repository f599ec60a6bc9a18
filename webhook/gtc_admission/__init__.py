"""Admission webhook that puts Greentic worker pods on Vault and refuses secret copies."""

__version__ = "0.1.0"
