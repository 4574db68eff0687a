"""Adapters: the ports of :mod:`shared.ports` on real backends."""
