"""Test helpers shipped for applications and backend authors.

Hypothesis strategies and the backend conformance suite.
"""
