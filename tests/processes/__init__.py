"""Real processes on loopback: rfwd's plugins, OpenSSH's sshd and ssh, each stopped by its test."""
