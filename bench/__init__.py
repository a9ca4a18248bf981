"""Anygle benchmark suite (issue 6): ``python -m bench --help``."""
