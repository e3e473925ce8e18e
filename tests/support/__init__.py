"""Test helpers shared by test packages."""
