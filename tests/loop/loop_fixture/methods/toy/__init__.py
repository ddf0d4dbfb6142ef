"""A test-only method whose speed and output the loop tests control through knobs.py."""
