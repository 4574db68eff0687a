"""The active-learning loop's own package: the pure core, its ports, the adapters and the services.

Named ``shared`` because the Azure Functions layout shares it between the four function apps.
"""
