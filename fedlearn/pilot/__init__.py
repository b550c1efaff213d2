"""Pilots across institutions: kits provisioned from one project file, parties started from their kits, and a
whole pilot on one machine (``fedlearn pilot up``)."""
