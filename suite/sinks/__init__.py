"""Where finished records are sent besides ``results/`` (MLflow). Imported only when used."""
