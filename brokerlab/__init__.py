"""The shared kernel: wire contract, ids, record-batch codec, error codes, sans-IO vocabulary.

Nothing in here imports node, controller, client, lab or cli.
"""
