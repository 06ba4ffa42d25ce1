"""The fleet overview: every view this provider refreshes, from Airflow's metadata database, as a page in the
Airflow UI and as JSON (:mod:`.records` reads the records, :mod:`.app` serves them)."""
