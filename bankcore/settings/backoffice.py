"""Teller back office settings (admin, roles, lockout, audit)."""
