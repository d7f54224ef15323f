"""The HTTP API under ``/v1``: dependencies, schemas and one router module per resource."""
