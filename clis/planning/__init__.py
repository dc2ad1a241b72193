"""Pieces of ``clis plan``: prompts, parsing and repair of LLM answers, chat backends.

The planner itself (concepts -> validated layouts) is :mod:`clis.plan`.
"""
