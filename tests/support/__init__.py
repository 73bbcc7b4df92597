"""Test support: a real Asterisk, the test caller, the daemon under test."""
