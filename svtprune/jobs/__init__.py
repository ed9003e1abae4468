"""The end-to-end jobs, one module each: short scripts over the graph, search, quantization and recovery parts."""
