"""Static files of the labelling site (copied into its assets/ folder)."""
