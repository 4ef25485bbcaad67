"""Tests of the protocol core."""
