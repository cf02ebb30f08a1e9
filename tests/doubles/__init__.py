"""Test doubles: stand-ins for servers that cannot run in the test environment (named so)."""
