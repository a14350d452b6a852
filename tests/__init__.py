"""twisted-rfwd's tests; run with the README's test command."""
