"""Worker runtime: resolve ``secret://`` references from Vault at boot; seed and bootstrap Vault."""

__version__ = "0.1.0"
