"""Jinja2 templates of the leaderboard site (package data; a package so that it ships in wheels)."""
