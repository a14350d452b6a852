"""The SSH client end (HostA): requests remote forwards and connects their channels locally."""
