"""The group coordinator (Kafka's classic consumer group protocol), sans-IO.

- ``state``: the group state machine (Enum + transition table) and the group model.
- ``records``: the records commands return, ``replay`` (the only mutator), their encoding in
  __consumer_offsets and the group -> partition hash.
- ``coordinator``: ``GroupShard``, the groups of one __consumer_offsets partition (join, sync,
  heartbeat, leave, timers); ``offsets``: commits, fetches and the admin view.
- ``host``: ``GroupCoordinatorHost``, the broker-side glue (placement, loading, writes with
  acks=all, deferred answers); ``broker_port``: what it needs from BrokerCore.
"""
