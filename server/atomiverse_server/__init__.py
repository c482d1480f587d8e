"""Atomiverse job API server: workspaces, jobs, routing, controller protocol, dashboard."""
