"""Cryptography of p2pinfer: identity keys and domain-separated signatures (PyNaCl only).

Link encryption and sealing live in their own modules (`crypto.link`, `crypto.sealing`).
"""
