"""Serving: the HTTP server in front of the champion, and the scoring that it and
``make predict`` share.
"""
