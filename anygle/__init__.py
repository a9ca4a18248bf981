"""Anygle: the backend for anonymous 1:1 stranger chat (Twisted, Autobahn, Redis)."""

__version__ = "0.1.0"
