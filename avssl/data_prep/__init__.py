"""Command-line tools that turn video folders and annotation files into training records."""
