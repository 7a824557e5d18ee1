"""The project's common package: event contracts, identifiers, topics, clock, calendar, settings, metrics.

Nothing here imports a service; services import this.
"""
