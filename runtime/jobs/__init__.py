"""Dataset jobs built on the inference library: input sources, output stores, statistics, the compute/write
pipeline and Ray execution. Never imports runtime.serve or runtime.cli."""
