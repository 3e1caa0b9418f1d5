"""Test support code: a scriptable mock HTTP backend and the contract transcript loader."""
