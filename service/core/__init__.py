"""Cross-cutting parts of the API: settings, security, audit, problems, metrics, uploads."""
