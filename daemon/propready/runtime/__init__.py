"""The long-running daemon: scheduler, systemd integration, metrics and health."""
