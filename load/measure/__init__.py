"""The load harness's parts (see load/README.md): what runs (stack), what is sent (mix, tokens),
how it is measured (wrk, procs), and what is reported (report, plot, soak, profile).

Design: every process is started by the harness on loopback on a free port and stopped by it; every
wait and every run is bounded in time; figures are medians over interleaved rounds, compared only
within one run. Nothing here imports the gateway's request path: the gateway is measured from the
outside, as a user runs it (``gateway serve``).
"""
