"""Helpers shared by the tests: fakes, in-memory wiring, real processes on loopback."""
