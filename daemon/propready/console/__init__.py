"""The web console served by `propready serve` on its own listener ([console] listen)."""
