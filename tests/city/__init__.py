"""A simulated week of a city (issue #20): terminals, each its own process and home, one
central service on PostgreSQL, faults on a schedule drawn from a seed, and the checks that
nothing approved was lost or counted twice. ``python -m tests.soak_city`` runs the week;
``tests/test_city_week.py`` a short version of it."""
