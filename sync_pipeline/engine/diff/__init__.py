"""The diff engine: windows, key-range descent, key-stream merge and statistics. No Dagster here."""
