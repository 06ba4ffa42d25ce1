"""Development helpers (throwaway PostgreSQL, demo, benchmarks); not part of the installed package."""
