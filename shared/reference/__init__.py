"""Reference data shipped with the package (places.json: prisons and courts by code)."""
