"""
Benchmarks of SSH remote port forwarding (ssh -R) on loopback: OpenSSH, twisted-rfwd and the mixed
pairs, driven by one load generator against one application server (see README.md).

  cli        the command line: which pairs, which scenarios, how often; the run loop
  pairs      the SSH pairs and how one is started (keys, configs, processes from L{harness})
  appserver  the application server, a separate single-threaded process
  loadgen    blocking sockets in this process: uploads, downloads, echoes
  scenarios  bulk, parallel bulk, connection rate and concurrency, each a JSON-able record
  report     the tables
"""
