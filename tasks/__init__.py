"""Task YAMLs, suites and bundled samples (data, not code). See README.md, "Tasks"."""
