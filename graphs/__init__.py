"""Serve app builders: bind the stage deployments into the deployment graph, resources from config."""
