"""The load test `make bench` drives with Locust: the mix (mix.py), the Locust users
(locustfile.py) and the population they sign in as (seed.py, written by bench_load.py)."""
