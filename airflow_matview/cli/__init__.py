"""The ``airflow-matview`` command: ``validate``, ``check`` and ``discover`` (see :mod:`.main`)."""
