"""The jinja2 template of the labelling site."""
