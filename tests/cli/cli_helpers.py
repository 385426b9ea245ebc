"""Constants of the CLI tests and their fixtures (imported by name: pytest puts this folder on sys.path)."""

API_KEY = "cli-test-key"  # the test server's key
TILE = {"tile_size": 64, "tile_overlap": 16}  # small tiles: the test images take the tiled path
