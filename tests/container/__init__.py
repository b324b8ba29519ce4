"""The container suite (`make test-container`): the Bento built into an OCI image and run as a user runs it."""
