"""Performance harness: every claim is a ratio measured in one run on one machine."""
