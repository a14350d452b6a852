"""In-memory tests: whole SSH connections between rfwd objects over iosim, no sockets."""
