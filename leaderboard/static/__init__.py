"""CSS and the table sorter copied into every built site (package data; a package so that it ships)."""
