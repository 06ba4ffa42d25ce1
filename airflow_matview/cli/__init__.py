"""The ``airflow-matview`` command: ``validate``, ``check``, ``discover`` and ``schema`` (see :mod:`.main`)."""
