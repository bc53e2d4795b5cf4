"""mvd_backends: one folder per framework, the same file names and public names in each."""
