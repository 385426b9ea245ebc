"""Constants of the CLI tests and their fixtures (`from tests.service.cli.cli_helpers import ...`)."""

API_KEY = "cli-test-key"  # the test server's key
# small fixed tiles (not the CPU's whole-image path): the test images take the tiled path
TILE = {"tile_size": 64, "tile_overlap": 16, "whole_max_pixels": 0}
