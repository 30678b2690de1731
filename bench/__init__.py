"""`python -m bench` (make bench): every benchmark, each printing a markdown table."""
