"""punchgate package."""
