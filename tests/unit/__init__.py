"""Unit tests: one module or object at a time, no SSH connection, no sockets."""
