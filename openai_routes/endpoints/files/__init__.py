"""``/v1/files``: uploaded files (and those batches write), their bytes, their content."""
