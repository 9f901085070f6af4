"""Helpers for Tollgate's integration tests: real processes on free loopback ports.

procs  ManagedProcess, free_port, wait_for, process/log helpers
pg     PgServer: a private PostgreSQL for the test session
cp     CpProcess (`tollgate cp start`) and AdminClient
The fixtures that use them are in ../conftest.py.
"""
