"""Built-in methods, one subpackage per family. Found by the harness only via entry points."""
