"""Test and demo support shared by the tests and the benchmark (never imported by the product)."""
