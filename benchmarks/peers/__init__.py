"""Scripts that time a peer library; each runs in the peers' virtual environment.

Each is run as ``python benchmarks/peers/<name>.py ARGS`` by ``benchmarks/bench_peers.py``
and prints one JSON object on its last line.  They live apart from tensortap's own process
because the peers patch global state (TorchLens wraps every torch function) or need another
Keras (keract runs on legacy ``tf_keras``).
"""
