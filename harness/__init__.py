"""
The test and benchmark harness: throwaway keys, OpenSSH configurations, the twistd command lines
of the plugins, child processes and the application protocol spoken through a tunnel.

Twisted-free, so that the blocking benchmarks and the Twisted tests build their SSH pairs the same
way, and not shipped: nothing under C{twisted_rfwd} imports it.
"""
