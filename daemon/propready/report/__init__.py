"""The audit report: readable summaries, SVG charts and a self-contained HTML page."""
