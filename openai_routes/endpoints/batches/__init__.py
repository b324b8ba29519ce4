"""The Batch API: ``/v1/batches`` and the runner that works through their lines."""
