"""The service layer: use cases that combine the core with the adapters' interfaces."""
