"""twistd plugins' option parsing and service construction: the only code that reads argv."""
