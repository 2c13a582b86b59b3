"""propready: orders PlanOmatic marketing media when a rental home becomes ready, exactly once."""

__version__ = "0.1.0"
