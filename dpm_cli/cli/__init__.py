"""The `dpm` command line: a thin layer over the library."""
