"""Atomiverse compute controller: registers slots, claims jobs, runs engines in worker
processes, heartbeats, reports results."""
