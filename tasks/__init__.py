"""Built-in evaluation tasks. Found by the harness only via entry points."""
