"""Report generators: tables and figures rebuilt from an MLflow experiment alone."""
